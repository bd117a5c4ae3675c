"""J-Quants API client: refresh token -> id token, paging, rate limiting, retries.

Every method returns a Polars frame in the same schema the file readers produce
(:mod:`inference.data.schema`), so research code can switch between a local export
and the live API without touching the feature pipeline.

Protocol (J-Quants API v1):

* ``POST /v1/token/auth_user`` with ``{"mailaddress", "password"}`` -> ``{"refreshToken"}``
* ``POST /v1/token/auth_refresh?refreshtoken=...`` -> ``{"idToken"}`` (valid 24 h)
* ``GET /v1/<endpoint>`` with ``Authorization: Bearer <idToken>``; large answers are
  paged: the body carries ``pagination_key`` until the last page.
* 429 means rate limited, 5xx a transient server fault: both are retried with
  exponential backoff (honouring ``Retry-After``); 401 triggers one id-token refresh.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date
from types import TracebackType
from typing import Any

import httpx
import polars as pl
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from inference.data.cache import ParquetCache
from inference.data.files import records_frame
from inference.data.schema import (
    DAILY_QUOTES_SCHEMA,
    LISTED_INFO_COLUMNS,
    normalize_daily_quotes,
    normalize_listed_info,
)

DEFAULT_BASE_URL = "https://api.jquants.com"
#: Refresh the id token this long before its documented 24 h expiry.
ID_TOKEN_LIFETIME_S = 23 * 3600


class JQuantsError(RuntimeError):
    """The API refused a request for a reason retrying will not fix."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"J-Quants API error {status}: {message}")
        self.status = status


class _Retryable(Exception):
    """429 / 5xx: worth another attempt after ``retry_after`` seconds (if given)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Retryable | httpx.TransportError)


def _day(value: date | str | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, date) else str(value)


def _check_range(start: date | str | None, end: date | str | None) -> None:
    """An empty date range is a caller error, not an empty answer to page through."""
    if start is not None and end is not None:
        lo, hi = _day(start), _day(end)
        assert lo is not None and hi is not None
        if lo.replace("-", "") > hi.replace("-", ""):
            raise ValueError(f"from_/to: empty date range, from_={lo} is after to={hi}")


class JQuantsClient:
    """Thread-safe client for the J-Quants REST API (v1).

    ``requests_per_second`` spaces requests out (the API answers 429 above its plan's
    limit); ``max_attempts`` bounds retries of 429, 5xx and connection errors;
    ``sleep`` is how the client waits (tests pass a recorder).
    """

    def __init__(
        self,
        refresh_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 30.0,
        requests_per_second: float = 2.0,
        max_attempts: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        cache: ParquetCache | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not refresh_token:
            raise ValueError("refresh_token: must be a non-empty J-Quants refresh token")
        if requests_per_second <= 0:
            raise ValueError("requests_per_second: must be > 0")
        self._refresh_token = refresh_token
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)
        self._min_interval = 1.0 / requests_per_second
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._cache = cache
        self._sleep = sleep
        self._lock = threading.Lock()
        self._last_request = 0.0
        self._id_token: str | None = None
        self._id_token_at = 0.0

    @classmethod
    def from_credentials(cls, mail_address: str, password: str, **kwargs: Any) -> JQuantsClient:
        """Log in with the account's e-mail and password to obtain the refresh token."""
        base_url = kwargs.get("base_url", DEFAULT_BASE_URL)
        transport = kwargs.get("transport")
        with httpx.Client(base_url=base_url, transport=transport, timeout=30.0) as http:
            resp = http.post(
                "/v1/token/auth_user", json={"mailaddress": mail_address, "password": password}
            )
        body = _json(resp)
        if resp.status_code != 200 or "refreshToken" not in body:
            raise JQuantsError(resp.status_code, str(body.get("message", body)))
        return cls(body["refreshToken"], **kwargs)

    # --- plumbing ---------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JQuantsClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _throttle(self) -> None:
        with self._lock:
            wait = self._last_request + self._min_interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._backoff_max)
        backoff = wait_exponential_jitter(
            multiplier=self._backoff_initial, max=self._backoff_max, jitter=self._backoff_initial
        )
        return float(backoff(state))

    def id_token(self, *, force: bool = False) -> str:
        """The current id token, refreshed from the refresh token when old or forced."""
        with self._lock:
            fresh = time.monotonic() - self._id_token_at < ID_TOKEN_LIFETIME_S
            if self._id_token is not None and fresh and not force:
                return self._id_token
        resp = self._send("POST", "/v1/token/auth_refresh", {"refreshtoken": self._refresh_token})
        body = _json(resp)
        if resp.status_code != 200 or "idToken" not in body:
            raise JQuantsError(resp.status_code, str(body.get("message", body)))
        with self._lock:
            self._id_token = str(body["idToken"])
            self._id_token_at = time.monotonic()
            return self._id_token

    def _send(
        self, method: str, path: str, params: dict[str, str], token: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        def attempt() -> httpx.Response:
            self._throttle()
            resp = self._http.request(method, path, params=params, headers=headers)
            if resp.status_code == 429 or resp.status_code >= 500:
                retry_after = resp.headers.get("Retry-After")
                raise _Retryable(
                    resp.status_code, float(retry_after) if retry_after is not None else None
                )
            return resp

        retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            message = f"{path}: gave up after {self._max_attempts} attempts"
            raise JQuantsError(exc.status, message) from exc

    def _get_all(self, endpoint: str, key: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every record of a paged GET, following ``pagination_key`` to the last page."""
        records: list[dict[str, Any]] = []
        query = dict(params)
        refreshed = False
        while True:
            resp = self._send("GET", f"/v1/{endpoint}", query, token=self.id_token())
            if resp.status_code == 401 and not refreshed:
                self.id_token(force=True)  # expired id token: refresh once, then retry
                refreshed = True
                continue
            body = _json(resp)
            if resp.status_code != 200:
                raise JQuantsError(resp.status_code, f"{endpoint}: {body.get('message', body)}")
            if key not in body:
                raise JQuantsError(resp.status_code, f"{endpoint}: answer has no '{key}' field")
            records.extend(body[key])
            next_key = body.get("pagination_key")
            if not next_key:
                return records
            query = {**params, "pagination_key": str(next_key)}

    def _fetch(
        self, endpoint: str, key: str, params: dict[str, str | None]
    ) -> pl.DataFrame | list[dict[str, Any]]:
        clean = {k: v for k, v in params.items() if v is not None}
        if self._cache is not None:
            cached = self._cache.get(endpoint, clean)
            if cached is not None:
                return cached
        return self._get_all(endpoint, key, clean)

    def _store(
        self, endpoint: str, params: dict[str, str | None], frame: pl.DataFrame
    ) -> pl.DataFrame:
        if self._cache is not None:
            clean = {k: v for k, v in params.items() if v is not None}
            self._cache.put(endpoint, clean, frame)
        return frame

    # --- endpoints ----------------------------------------------------------------------
    def daily_quotes(
        self,
        code: str | None = None,
        *,
        date_: date | str | None = None,
        from_: date | str | None = None,
        to: date | str | None = None,
    ) -> pl.DataFrame:
        """``/prices/daily_quotes``: one code over a range, or all codes on one date."""
        if code is None and date_ is None:
            raise ValueError("code/date_: J-Quants needs a code or a date for daily quotes")
        _check_range(from_, to)
        params = {"code": code, "date": _day(date_), "from": _day(from_), "to": _day(to)}
        got = self._fetch("prices/daily_quotes", "daily_quotes", params)
        if isinstance(got, pl.DataFrame):
            return got
        frame = records_frame(got)
        frame = (
            pl.DataFrame(schema=DAILY_QUOTES_SCHEMA)
            if frame.is_empty()
            else (normalize_daily_quotes(frame, source="prices/daily_quotes"))
        )
        return self._store("prices/daily_quotes", params, frame)

    def listed_info(
        self, code: str | None = None, *, date_: date | str | None = None
    ) -> pl.DataFrame:
        """``/listed/info``: issues with names, Sector17/33 codes and scale category."""
        params = {"code": code, "date": _day(date_)}
        got = self._fetch("listed/info", "info", params)
        if isinstance(got, pl.DataFrame):
            return got
        frame = records_frame(got)
        frame = (
            pl.DataFrame(schema=dict.fromkeys(LISTED_INFO_COLUMNS, pl.Utf8)).with_columns(
                pl.col("Date").cast(pl.Date)
            )
            if frame.is_empty()
            else normalize_listed_info(frame, source="listed/info")
        )
        return self._store("listed/info", params, frame)

    def trading_calendar(
        self,
        *,
        from_: date | str | None = None,
        to: date | str | None = None,
        holiday_division: str | None = None,
    ) -> pl.DataFrame:
        """``/markets/trading_calendar``: Date (pl.Date), HolidayDivision (Utf8)."""
        _check_range(from_, to)
        params = {"holidaydivision": holiday_division, "from": _day(from_), "to": _day(to)}
        got = self._fetch("markets/trading_calendar", "trading_calendar", params)
        if isinstance(got, pl.DataFrame):
            return got
        frame = pl.DataFrame(
            {
                "Date": [r["Date"] for r in got],
                "HolidayDivision": [str(r["HolidayDivision"]) for r in got],
            },
            schema={"Date": pl.Utf8, "HolidayDivision": pl.Utf8},
        ).with_columns(pl.col("Date").str.to_date())
        return self._store("markets/trading_calendar", params, frame.sort("Date"))

    def topix(
        self, *, from_: date | str | None = None, to: date | str | None = None
    ) -> pl.DataFrame:
        """``/indices/topix``: Date (pl.Date), Open, High, Low, Close (Float64)."""
        _check_range(from_, to)
        params = {"from": _day(from_), "to": _day(to)}
        got = self._fetch("indices/topix", "topix", params)
        if isinstance(got, pl.DataFrame):
            return got
        schema = {"Date": pl.Utf8, **dict.fromkeys(("Open", "High", "Low", "Close"), pl.Float64)}
        frame = pl.DataFrame(
            [{k: r.get(k) for k in schema} for r in got], schema=schema, strict=False
        ).with_columns(pl.col("Date").str.to_date())
        return self._store("indices/topix", params, frame.sort("Date"))

    def statements(
        self, code: str | None = None, *, date_: date | str | None = None
    ) -> pl.DataFrame:
        """``/fins/statements``: financial statements as the API sends them (strings),
        with ``DisclosedDate`` as pl.Date and ``LocalCode`` as a 5-digit code."""
        if code is None and date_ is None:
            raise ValueError("code/date_: J-Quants needs a code or a date for statements")
        params = {"code": code, "date": _day(date_)}
        got = self._fetch("fins/statements", "statements", params)
        if isinstance(got, pl.DataFrame):
            return got
        if not got:
            frame = pl.DataFrame(schema={"DisclosedDate": pl.Date, "LocalCode": pl.Utf8})
        else:
            names = list(dict.fromkeys(k for r in got for k in r))
            frame = pl.DataFrame(
                [{k: (None if r.get(k) is None else str(r[k])) for k in names} for r in got],
                schema=dict.fromkeys(names, pl.Utf8),
            )
            if "DisclosedDate" in frame.columns:
                frame = frame.with_columns(pl.col("DisclosedDate").str.to_date())
        return self._store("fins/statements", params, frame)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"message": resp.text[:200]}
    return body if isinstance(body, dict) else {"message": str(body)[:200]}
