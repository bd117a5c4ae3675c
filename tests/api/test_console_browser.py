"""The desk console in a real browser: headless Chromium, driven by Playwright, against a
real `tradecore serve` process.

One server and one browser for the module (each test opens its own browser context, so
no test inherits another's sign-in). Users are made with `tradecore user add`, accounts
and the counterparty's orders through the API as an admin would. What is checked is
what a person at the desk would notice: fills appearing in the blotter, a position and
the PnL changing without a reload, a refusal next to the field it names, a viewer with
nothing to press, a halt that stops the next order, a banner while the server is away,
and the sign-in form once a token has run out. Screenshots of the main views go to
``docs/console/`` (shown in the README).

Chromium is the Debian package (``/usr/bin/chromium``; ``make browser`` installs it):
Playwright's own browser download is not reachable from here. Without it the tests skip
saying so, except under ``TRADECORE_REQUIRE_DATA=1`` (CI), where they fail.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import get_settings
from tests.processes import PROJECT_ROOT, TRADECORE, Served, env_for, spawn, tc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = PROJECT_ROOT / "docs" / "console"
PASSWORD = "a desk password long enough"
SYMBOL = "7203"
WAIT_MS = 20_000

pytestmark = pytest.mark.slow


def _need_browser() -> Any:
    """Playwright's sync API, or a skip (a failure under TRADECORE_REQUIRE_DATA=1)."""
    why = None
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        why = f"{CHROMIUM} is absent (`make browser` installs the Debian chromium package)"
    try:
        from playwright import sync_api
    except ImportError:
        sync_api, why = None, why or "the playwright package is not installed"
    if why is not None:
        if get_settings().require_data:
            pytest.fail(why + " and TRADECORE_REQUIRE_DATA=1")
        pytest.skip(why)
    return sync_api


def add_user(folder: Path, name: str, role: str, *accounts: str) -> None:
    options = [part for account in accounts for part in ("--account", account)]
    done = subprocess.run([*TRADECORE, "user", "add", name, "--role", role, *options,
                           "--password-stdin"], input=PASSWORD + "\n", capture_output=True,
                          text=True, env=env_for(folder), timeout=120, check=False)
    assert done.returncode == 0, done.stderr


class Desk:
    """The module's server, its admin client and the browser."""

    def __init__(self, folder: Path, server: Served, browser: Any, expect: Any) -> None:
        self.folder, self.server, self.browser, self.expect = folder, server, browser, expect
        self.accounts: dict[str, str] = {}
        self.base_price = 0

    def open_funded(self, name: str, *, allow_short: bool = False) -> str:
        http = self.server.http
        opened = http.post("/v1/accounts", json={"name": name, "owner": name,
                                                 "allow_short": allow_short})
        assert opened.status_code == 201, opened.text
        account = opened.json()["account_id"]
        funded = http.post(f"/v1/accounts/{account}/deposits", json={"amount": 100_000_000})
        assert funded.status_code == 201, funded.text
        self.accounts[name] = account
        return str(account)

    def rest(self, account: str, side: str, price: int, client_order_id: str) -> None:
        """An order of another desk, placed through the API, resting on the book."""
        placed = self.server.http.post("/v1/orders", json={
            "account_id": self.accounts[account], "client_order_id": client_order_id,
            "symbol": SYMBOL, "side": side, "quantity": 100, "price": price, "tif": "gtc"})
        assert placed.status_code == 201, placed.text
        self.server.idle()

    def page(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1500, "height": 980})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors  # a script error is a failure: no test reads a broken page
        return page

    def sign_in(self, name: str) -> Any:
        page = self.page()
        page.goto(self.server.url + "/")
        page.fill("#signin-name", name)
        page.fill("#signin-password", PASSWORD)
        page.click("#signin-submit")
        self.expect(page.locator("#desk")).to_be_visible()
        self.expect(page.locator("#who")).to_contain_text(name)
        page.select_option("#m-symbol", SYMBOL)  # the book and chart of the test's symbol
        return page

    def shot(self, page: Any, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(300)  # let the charts draw their last frame
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self, page: Any) -> None:
        assert page.errors == [], page.errors
        page.context.close()


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    sync_api = _need_browser()
    folder = tmp_path_factory.mktemp("console")
    server = Served(folder)
    playwright = sync_api.sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    sync_api.expect.set_options(timeout=WAIT_MS)
    desk = Desk(folder, server, browser, sync_api.expect)
    try:
        desk.open_funded("alice")
        desk.open_funded("bob", allow_short=True)
        desk.open_funded("carol")
        add_user(folder, "dana", "trader", "alice", "bob")
        add_user(folder, "vic", "viewer", "carol")
        add_user(folder, "rita", "risk")
        add_user(folder, "olga", "admin")
        instrument = server.http.get(f"/v1/instruments/{SYMBOL}").json()
        desk.base_price = instrument["base_price"]
        yield desk
    finally:
        browser.close()
        playwright.stop()
        server.stop()


def yen(units: int) -> str:
    """A price as the ticket takes it (yen; prices are tenths of a yen)."""
    return f"{units // 10}" if units % 10 == 0 else f"{units / 10:.1f}"


def ticket(page: Any, account: str, side: str, quantity: str, price: str) -> None:
    page.select_option("#t-account", label=account)
    page.select_option("#t-symbol", SYMBOL)
    page.select_option("#t-side", side)
    page.fill("#t-quantity", quantity)
    page.fill("#t-price", price)
    page.click("#t-submit")


# ------------------------------------------------------------------------------ scenarios


def test_a_crossing_order_fills_both_sides_live(desk: Desk) -> None:
    sign_in_page = desk.page()
    sign_in_page.goto(desk.server.url + "/")
    desk.expect(sign_in_page.locator("#signin")).to_be_visible()
    desk.shot(sign_in_page, "signin")
    desk.close(sign_in_page)

    page = desk.sign_in("dana")
    expect = desk.expect
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    price = desk.base_price
    # the ticket shows the day's limits and the lot before anything is typed
    expect(page.locator('[data-fact="Lot"]')).to_have_text("100 shares")
    expect(page.locator('[data-fact="Lower limit"]')).not_to_have_text("")
    expect(page.locator("#balances tr[data-account=alice] td").nth(2)).to_have_text("¥0")

    desk.rest("bob", "sell", price, "bob-offer")  # another account's resting offer
    expect(page.locator("#book tbody tr.ask")).to_have_count(1)  # the book refreshes

    ticket(page, "alice", "buy", "100", yen(price))
    expect(page.locator("#t-result")).to_contain_text("placed")
    fills = page.locator("#fills tbody tr")
    expect(fills).to_have_count(2)  # alice's buy and bob's sell, from the stream
    expect(fills.filter(has_text="alice")).to_contain_text("buy")
    expect(fills.filter(has_text="bob")).to_contain_text("sell")
    expect(page.locator("#orders tbody tr td.status").first).to_have_text("filled")
    expect(page.locator('#positions tr[data-position="alice/7203"] td').nth(2)).to_have_text("100")
    expect(page.locator('#positions tr[data-position="bob/7203"] td').nth(2)).to_have_text("-100")
    expect(page.locator('[data-pnl="fees"]')).not_to_have_text("¥0")  # the PnL moved
    expect(page.locator("#book-last")).to_contain_text(f"last {int(price / 10):,}")
    assert page.evaluate("window.sameDocument") is True
    desk.shot(page, "desk")
    desk.close(page)


def test_a_refused_order_shows_the_named_field_and_keeps_the_numbers(desk: Desk) -> None:
    page = desk.sign_in("dana")
    expect = desk.expect
    off_tick = f"{desk.base_price // 10}.5"  # 7203 trades in whole yen at this price
    ticket(page, "alice", "buy", "100", off_tick)
    price_error = page.locator('#ticket .field-error[data-for="price"]')
    expect(price_error).to_contain_text("tick grid")
    expect(page.locator("#t-price")).to_have_value(off_tick)
    expect(page.locator("#t-price")).to_have_class("invalid")

    ticket(page, "alice", "buy", "150", yen(desk.base_price))
    expect(page.locator('#ticket .field-error[data-for="quantity"]')).to_contain_text(
        "100-share")
    expect(page.locator("#t-quantity")).to_have_value("150")
    expect(price_error).to_be_empty()

    above = desk.server.http.get(f"/v1/instruments/{SYMBOL}").json()["upper_limit"] + 10
    ticket(page, "alice", "buy", "100", yen(above))
    expect(price_error).to_contain_text("outside today's limits")
    desk.shot(page, "refused")
    desk.close(page)


def test_amend_and_cancel_from_the_blotter(desk: Desk) -> None:
    page = desk.sign_in("dana")
    expect = desk.expect
    bid = desk.base_price - 200
    ticket(page, "alice", "buy", "100", yen(bid))
    row = page.locator("#orders tbody tr").filter(has_text=f"{bid // 10:,}")
    expect(row.locator("td.status")).to_have_text("working")
    row.locator("button.amend-open").click()
    row.locator('input[name="quantity"]').fill("300")
    row.locator('input[name="price"]').fill(yen(bid + 50))
    row.get_by_role("button", name="Save").click()
    amended = page.locator("#orders tbody tr").filter(has_text=f"{(bid + 50) // 10:,}")
    expect(amended.locator("td").nth(5)).to_have_text("300")  # the venue took the amend
    expect(amended.locator("td.status")).to_have_text("working")
    expect(page.locator("#book tbody tr.bid").filter(has_text=f"{(bid + 50) // 10:,}")
           ).to_contain_text("300")
    amended.locator("button.cancel").click()
    expect(amended.locator("td.status")).to_have_text("cancelled")
    expect(amended.locator("button")).to_have_count(0)
    desk.close(page)


def test_a_viewer_has_nothing_to_press(desk: Desk) -> None:
    desk.rest("carol", "buy", desk.base_price - 100, "carol-bid")  # an open order to show
    page = desk.sign_in("vic")
    expect = desk.expect
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    expect(page.locator("#ticket-panel")).to_be_hidden()
    expect(page.locator("#risk-panel")).to_be_hidden()
    buttons = page.locator("button:visible")
    assert buttons.all_inner_texts() == ["Sign out"]
    expect(page.locator("#balances tbody tr")).to_have_count(1)  # carol's only
    desk.shot(page, "viewer")
    desk.close(page)


def test_risk_halts_a_symbol_and_the_next_order_is_refused(desk: Desk) -> None:
    expect = desk.expect
    trader = desk.sign_in("dana")  # already at the desk when the halt comes
    trader.evaluate("window.sameDocument = true")  # gone if the page reloads
    trader.select_option("#t-symbol", SYMBOL)
    expect(trader.locator("#t-halted")).to_be_hidden()
    risk = desk.sign_in("rita")
    expect(risk.locator("#ticket-panel")).to_be_hidden()  # risk never trades
    expect(risk.locator("#close-row")).to_be_visible()  # but closes the session
    expect(risk.locator("#halts-count")).to_have_text("none")
    risk.select_option("#r-symbol", SYMBOL)
    risk.fill("#r-reason", "news pending")
    risk.click("#r-halt-symbol")
    expect(risk.locator("#risk-log li").first).to_contain_text(f"{SYMBOL} halt: halted")
    listed = risk.locator(f'#halts tr[data-halt="symbol/{SYMBOL}"] td')
    expect(listed.nth(1)).to_have_text("news pending")
    expect(listed.nth(2)).to_have_text("rita")  # who halted it
    # the trader's ticket says so without a reload (the page asks GET /v1/halts)
    expect(trader.locator("#t-halted")).to_have_text(f"HALTED: {SYMBOL} (news pending)")
    desk.shot(risk, "risk")
    desk.shot(trader, "halted-ticket")

    ticket(trader, "alice", "buy", "100", yen(desk.base_price))  # still submits
    expect(trader.locator('#ticket .field-error[data-for="symbol"]')).to_contain_text(
        f"trading in {SYMBOL} is halted")

    risk.locator(f'#halts tr[data-halt="symbol/{SYMBOL}"] button.resume').click()
    expect(risk.locator("#risk-log li").first).to_contain_text(f"{SYMBOL} resume: trading")
    expect(risk.locator("#halts tbody tr")).to_have_count(0)
    expect(trader.locator("#t-halted")).to_be_hidden()
    ticket(trader, "alice", "buy", "100", yen(desk.base_price - 100))
    expect(trader.locator("#t-result")).to_contain_text("placed")
    assert trader.evaluate("window.sameDocument") is True
    desk.close(risk)
    desk.close(trader)


def test_an_admin_closing_a_far_session_sees_the_rule_by_the_date(desk: Desk) -> None:
    expect = desk.expect
    page = desk.sign_in("olga")
    expect(page.locator("#ticket-panel")).to_be_visible()  # admin trades every account
    expect(page.locator("#balances tbody tr")).to_have_count(3)
    page.fill("#r-session-date", "9999-12-31")
    page.click("#r-close-session")
    expect(page.locator('#risk-form .field-error[data-for="session_date"]')).to_contain_text(
        "is not a session that can close now")
    expect(page.locator("#r-session-date")).to_have_value("9999-12-31")
    expect(page.locator("#risk-log li")).to_have_count(0)
    desk.close(page)


def test_a_lost_connection_shows_a_banner_and_reconnects(desk: Desk) -> None:
    expect = desk.expect
    page = desk.sign_in("dana")
    expect(page.locator("#link")).to_have_class("link up")
    server = desk.server
    server.stop()
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Connection lost")
    desk.shot(page, "offline")
    server.process = spawn(server.folder, "serve", "--port", str(server.port), "--log-level",
                           "warning")
    server.wait_ready()
    server.http = type(server.http)(base_url=server.url, timeout=30,
                                    headers=dict(server.http.headers))
    expect(banner).to_be_hidden(timeout=30_000)
    expect(page.locator("#link")).to_have_class("link up")
    desk.rest("bob", "sell", desk.base_price + 100, "bob-offer-2")
    ticket(page, "alice", "buy", "100", yen(desk.base_price + 100))
    expect(page.locator("#fills tbody tr").filter(has_text="alice")).to_have_count(2)
    desk.close(page)


def test_a_pasted_token_works_until_it_expires(desk: Desk) -> None:
    expect = desk.expect
    issued = tc(desk.folder, "auth", "token", "--subject", "ops", "--role", "admin",
                "--ttl", "6")
    assert issued.returncode == 0, issued.stderr
    page = desk.page()
    page.goto(desk.server.url + "/")
    page.click("#token-box summary")
    page.fill("#token-input", issued.stdout.strip())
    page.click("#token-submit")
    expect(page.locator("#desk")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("ops · admin")
    expect(page.locator("#close-row")).to_be_visible()  # admin closes the session
    expect(page.locator("#signin")).to_be_visible(timeout=15_000)
    expect(page.locator("#signin-error")).to_contain_text("expired")
    assert page.locator("#desk").is_hidden()

    wrong = desk.page()
    wrong.goto(desk.server.url + "/")
    wrong.fill("#signin-name", "dana")
    wrong.fill("#signin-password", "not the password")
    wrong.click("#signin-submit")
    expect(wrong.locator("#signin-error")).to_have_text("name or password not accepted")
    expect(wrong.locator("#signin-password")).to_have_value("")
    desk.close(page)
    desk.close(wrong)
