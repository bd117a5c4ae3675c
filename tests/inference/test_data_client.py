"""JQuantsClient against a real local HTTP server speaking the J-Quants API's shapes.

The server checks the refresh -> id token flow and the Bearer header, pages long
answers with ``pagination_key``, answers 429 once, and serves each endpoint's
documented envelope. Nothing is mocked inside the client: real sockets, real httpx.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import polars as pl
import pytest

from inference.data import DAILY_QUOTES_SCHEMA, JQuantsClient, JQuantsError, ParquetCache

REFRESH = "refresh-abc"
PAGE = 3


def _quote(day: str, code: str, close: float) -> dict[str, Any]:
    return {
        "Date": day, "Code": code, "Open": close, "High": close + 2, "Low": close - 2,
        "Close": close, "UpperLimit": "0", "LowerLimit": "0", "Volume": 1000.0,
        "TurnoverValue": close * 1000.0, "AdjustmentFactor": 1.0, "AdjustmentOpen": close,
        "AdjustmentHigh": close + 2, "AdjustmentLow": close - 2, "AdjustmentClose": close,
        "AdjustmentVolume": 1000.0,
    }  # fmt: skip


QUOTES = [_quote(f"2023-03-{d:02d}", "86970", 2000.0 + d) for d in range(1, 11)]


@dataclass
class ApiState:
    id_tokens: list[str] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    throttle_once: set[str] = field(default_factory=lambda: {"/v1/listed/info"})
    expire_next: bool = False
    #: The quotes the server has published (the market-data loop's tests add days).
    quotes: list[dict[str, Any]] = field(default_factory=lambda: list(QUOTES))


def _handler(state: ApiState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _answer(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("POST", url.path, query))
            if url.path == "/v1/token/auth_user":
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body == {"mailaddress": "a@b.jp", "password": "pw"}:
                    return self._answer(200, {"refreshToken": REFRESH})
                return self._answer(400, {"message": "'mailaddress' or 'password' is incorrect."})
            if url.path == "/v1/token/auth_refresh":
                if query.get("refreshtoken") != [REFRESH]:
                    return self._answer(400, {"message": "'refreshtoken' is incorrect."})
                token = f"id-{len(state.id_tokens)}"
                state.id_tokens.append(token)
                return self._answer(200, {"idToken": token})
            return self._answer(404, {"message": "not found"})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            state.requests.append(("GET", url.path, query))
            if (
                not state.id_tokens
                or self.headers.get("Authorization") != f"Bearer {state.id_tokens[-1]}"
            ):
                return self._answer(401, {"message": "The incoming token is invalid or expired."})
            if state.expire_next:
                state.expire_next = False
                return self._answer(401, {"message": "The incoming token is invalid or expired."})
            if url.path in state.throttle_once:
                state.throttle_once.discard(url.path)
                return self._answer(429, {"message": "Too Many Requests"}, {"Retry-After": "0"})
            if url.path == "/v1/prices/daily_quotes":
                start = int(query.get("pagination_key", ["0"])[0])
                if "date" in query:  # every code on one date (what a daily poll asks)
                    rows = [q for q in state.quotes if q["Date"] == query["date"][0]]
                else:
                    code = query.get("code", ["86970"])[0]
                    rows = [q for q in state.quotes if q["Code"] == code]
                body: dict[str, Any] = {"daily_quotes": rows[start : start + PAGE]}
                if start + PAGE < len(rows):
                    body["pagination_key"] = str(start + PAGE)
                return self._answer(200, body)
            if url.path == "/v1/listed/info":
                return self._answer(200, {"info": [{
                    "Date": "2023-03-24", "Code": "86970", "CompanyName": "日本取引所グループ",
                    "CompanyNameEnglish": "Japan Exchange Group,Inc.", "Sector17Code": "16",
                    "Sector17CodeName": "金融（除く銀行）", "Sector33Code": "7200",
                    "Sector33CodeName": "その他金融業", "ScaleCategory": "TOPIX Large70",
                    "MarketCode": "0111", "MarketCodeName": "プライム"}]})  # fmt: skip
            if url.path == "/v1/markets/trading_calendar":
                return self._answer(200, {"trading_calendar": [
                    {"Date": "2015-04-01", "HolidayDivision": "1"},
                    {"Date": "2015-04-04", "HolidayDivision": "0"}]})  # fmt: skip
            if url.path == "/v1/indices/topix":
                return self._answer(200, {"topix": [
                    {"Date": "2022-06-28", "Open": 1885.52, "High": 1907.38, "Low": 1885.32,
                     "Close": 1907.38}]})  # fmt: skip
            if url.path == "/v1/fins/statements":
                return self._answer(200, {"statements": [
                    {"DisclosedDate": "2023-01-30", "DisclosedTime": "12:00:00",
                     "LocalCode": "86970",
                     "TypeOfDocument": "3QFinancialStatements_Consolidated_IFRS",
                     "NetSales": "100529000000", "Profit": "45000000000"}]})  # fmt: skip
            if url.path == "/v1/server_error":
                return self._answer(503, {"message": "unavailable"})
            return self._answer(400, {"message": f"unknown endpoint {url.path}"})

    return Handler


@pytest.fixture
def api() -> Iterator[tuple[str, ApiState]]:
    state = ApiState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def _client(url: str, **kwargs: Any) -> JQuantsClient:
    options: dict[str, Any] = dict(
        base_url=url, requests_per_second=1000.0, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    options.update(kwargs)
    return JQuantsClient(REFRESH, **options)


def test_pages_are_followed_and_schema_is_exact(api: tuple[str, ApiState]) -> None:
    url, state = api
    with _client(url) as client:
        quotes = client.daily_quotes("86970", from_=date(2023, 3, 1), to=date(2023, 3, 31))
    assert dict(quotes.schema) == DAILY_QUOTES_SCHEMA
    assert quotes["Date"].to_list() == [date(2023, 3, d) for d in range(1, 11)]
    assert quotes["AdjustmentClose"].to_list() == [2000.0 + d for d in range(1, 11)]
    gets = [q for m, p, q in state.requests if p == "/v1/prices/daily_quotes"]
    assert [q.get("pagination_key") for q in gets] == [None, ["3"], ["6"], ["9"]]
    assert all(q["from"] == ["2023-03-01"] and q["to"] == ["2023-03-31"] for q in gets)
    assert len(state.id_tokens) == 1  # one id token, reused across pages


def test_rate_limit_429_is_retried(api: tuple[str, ApiState]) -> None:
    url, state = api
    with _client(url) as client:
        listed = client.listed_info()
    assert listed["Sector33Code"].to_list() == ["7200"]
    assert listed["ScaleCategory"].to_list() == ["TOPIX Large70"]
    assert [p for _, p, _ in state.requests].count("/v1/listed/info") == 2


def test_expired_id_token_is_refreshed_once(api: tuple[str, ApiState]) -> None:
    url, state = api
    with _client(url) as client:
        client.topix()
        state.expire_next = True
        topix = client.topix(from_="2022-06-01", to="2022-06-30")
    assert topix["Close"].to_list() == [1907.38]
    assert topix.schema["Date"] == pl.Date
    assert len(state.id_tokens) == 2


def test_calendar_and_statements_shapes(api: tuple[str, ApiState]) -> None:
    url, _ = api
    with _client(url) as client:
        calendar = client.trading_calendar(from_="2015-04-01", to="2015-04-30")
        statements = client.statements("86970")
    assert calendar.to_dicts() == [
        {"Date": date(2015, 4, 1), "HolidayDivision": "1"},
        {"Date": date(2015, 4, 4), "HolidayDivision": "0"},
    ]
    assert statements["DisclosedDate"].to_list() == [date(2023, 1, 30)]
    assert statements["NetSales"].to_list() == ["100529000000"]


def test_login_with_credentials_and_bad_refresh_token(api: tuple[str, ApiState]) -> None:
    url, _ = api
    client = JQuantsClient.from_credentials("a@b.jp", "pw", base_url=url)
    assert client.id_token() == "id-0"
    client.close()
    with pytest.raises(JQuantsError, match="password"):
        JQuantsClient.from_credentials("a@b.jp", "wrong", base_url=url)
    with (
        JQuantsClient("not-the-token", base_url=url) as bad,
        pytest.raises(JQuantsError, match="refreshtoken"),
    ):
        bad.id_token()


def test_server_errors_give_up_after_max_attempts(api: tuple[str, ApiState]) -> None:
    url, state = api
    with _client(url, max_attempts=3) as client, pytest.raises(JQuantsError, match="3 attempts"):
        client._get_all("server_error", "x", {})
    assert [p for _, p, _ in state.requests].count("/v1/server_error") == 3


def test_bad_requests_fail_before_the_network(api: tuple[str, ApiState]) -> None:
    url, state = api
    with _client(url) as client:
        with pytest.raises(ValueError, match="empty date range"):
            client.daily_quotes("86970", from_="2023-03-31", to="2023-03-01")
        with pytest.raises(ValueError, match="code or a date"):
            client.daily_quotes()
    assert state.requests == []


def test_parquet_cache_answers_the_second_time(api: tuple[str, ApiState], tmp_path: Path) -> None:
    url, state = api
    cache = ParquetCache(tmp_path / "cache")
    with _client(url, cache=cache) as client:
        first = client.daily_quotes("86970")
        n_requests = len(state.requests)
        second = client.daily_quotes("86970")
        assert len(state.requests) == n_requests  # served from Parquet
        other = client.daily_quotes("86970", from_="2023-03-01")
    assert first.equals(second)
    assert other.height == first.height and len(state.requests) > n_requests
    assert list((tmp_path / "cache" / "prices_daily_quotes").glob("*.parquet"))


def test_rate_limiter_spaces_requests_and_backoff_waits(api: tuple[str, ApiState]) -> None:
    url, state = api
    waits: list[float] = []
    state.throttle_once = {"/v1/indices/topix"}
    with _client(url, requests_per_second=1.0, sleep=waits.append) as client:
        client.daily_quotes("86970")  # token + 4 pages, back to back
        throttle_waits = list(waits)
        client.topix()  # 429 once with Retry-After: 0
    # Every request after the first waited for its 1 s slot (sleep is recorded, not
    # slept, so requests come faster than the limit and each one must wait; a slot of
    # 50 ms was sometimes outlasted by a request itself on a loaded CI machine).
    assert len(throttle_waits) == 4
    assert all(0 < w <= 1.0 for w in throttle_waits)
    assert 0.0 in waits[len(throttle_waits) :]  # the Retry-After wait
