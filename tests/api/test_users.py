"""Console users: the `tradecore user` commands, argon2id hashes, lockout, and sign-in.

The service runs over a real SQLite read-model file (migrated as `tradecore db upgrade`
does); the CLI runs as an operator types it; `POST /v1/session` is called over real HTTP
against a live server, and the token it returns is used on the API like any other.
"""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from aggregates.errors import Conflict, NotFound, RuleViolation
from aggregates.ids import account_id
from api.roles import Role
from api.users import SignInRefused, Users, UserStore
from projections.schema import upgrade
from projections.store import ReadStore
from tests.api.server import live_server
from tests.processes import TRADECORE, env_for
from tests.projections.conftest import plain_url

PASSWORD = "correct horse battery staple"
ALICE, BOB = account_id("alice"), account_id("bob")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadStore]:
    """The users table where each deployment keeps it: SQLite, or PostgreSQL."""
    if request.param == "sqlite":
        store = ReadStore.sqlite(tmp_path / "readmodels.sqlite")
    else:
        store = ReadStore.postgres(plain_url(), f"users_{uuid.uuid4().hex[:12]}")
    upgrade(store)
    yield store
    if store.schema:
        store.execute(f'DROP SCHEMA "{store.schema}" CASCADE')
    store.close()


def users_over(store: ReadStore, clock: Clock, **options: int) -> Users:
    return Users(UserStore(store), lockout_failures=options.get("failures", 3),
                 lockout_s=options.get("lock_s", 60), clock=clock)


# ------------------------------------------------------------------------- the service


def test_a_user_signs_in_with_their_password_and_the_hash_is_argon2id(store: ReadStore) -> None:
    users = users_over(store, Clock())
    users.add("alice", PASSWORD, Role.trader, [ALICE, BOB])
    user = users.sign_in("alice", PASSWORD)
    assert (user.role, user.accounts) == (Role.trader, frozenset({ALICE, BOB}))
    (stored,) = store.fetchone("SELECT password_hash FROM users WHERE name = %s", ("alice",))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    with pytest.raises(SignInRefused) as refused:
        users.sign_in("alice", PASSWORD + "!")
    assert refused.value.locked_for is None


def test_bad_users_are_refused_naming_the_field_and_store_nothing(store: ReadStore) -> None:
    users = users_over(store, Clock())
    cases = [
        (("a b", PASSWORD, Role.trader, [ALICE]), "name"),
        (("alice", "short", Role.trader, [ALICE]), "password"),
        (("alice", PASSWORD, Role.trader, []), "accounts"),
        (("alice", PASSWORD, Role.viewer, None), "accounts"),
        (("alice", PASSWORD, Role.risk, [ALICE]), "accounts"),
        (("alice", PASSWORD, "boss", None), "role"),
    ]
    for args, field in cases:
        with pytest.raises(RuleViolation) as refused:
            users.add(*args)  # type: ignore[arg-type]
        assert refused.value.field == field
        assert "short" not in str(refused.value)  # a password is never echoed
    assert users.list() == []
    users.add("risk-desk", PASSWORD, Role.risk, None)
    with pytest.raises(Conflict):
        users.add("risk-desk", PASSWORD, Role.admin, None)
    with pytest.raises(NotFound):
        users.passwd("nobody", PASSWORD)
    with pytest.raises(NotFound):
        users.disable("nobody")
    assert [(u.name, u.role, u.accounts) for u in users.list()] == [
        ("risk-desk", Role.risk, None)]


def test_repeated_failures_lock_the_name_until_the_lock_runs_out(store: ReadStore) -> None:
    clock = Clock()
    users = users_over(store, clock, failures=3, lock_s=60)
    users.add("alice", PASSWORD, Role.trader, [ALICE])
    for _ in range(2):
        with pytest.raises(SignInRefused) as refused:
            users.sign_in("alice", "wrong password here")
        assert refused.value.locked_for is None
    users.sign_in("alice", PASSWORD)  # a success clears the count
    for _ in range(2):
        with pytest.raises(SignInRefused):
            users.sign_in("alice", "wrong password here")
    with pytest.raises(SignInRefused) as refused:
        users.sign_in("alice", "wrong password here")  # the third in a row locks
    assert refused.value.locked_for == 60
    clock.now += timedelta(seconds=30)
    with pytest.raises(SignInRefused) as refused:
        users.sign_in("alice", PASSWORD)  # locked: even the right password
    assert refused.value.locked_for == 30
    clock.now += timedelta(seconds=31)
    assert users.sign_in("alice", PASSWORD).name == "alice"


def test_an_unknown_name_locks_the_same_way(store: ReadStore) -> None:
    """Else the 423 would tell a guesser which names exist."""
    users = users_over(store, Clock(), failures=3, lock_s=60)
    answers = []
    for _ in range(4):
        with pytest.raises(SignInRefused) as refused:
            users.sign_in("nobody", "any password at all")
        answers.append(refused.value.locked_for)
    assert answers == [None, None, 60, 60]


def test_disabled_is_refused_like_a_wrong_password_and_enable_unlocks(store: ReadStore) -> None:
    clock = Clock()
    users = users_over(store, clock, failures=2, lock_s=600)
    users.add("alice", PASSWORD, Role.trader, [ALICE])
    users.disable("alice")
    with pytest.raises(SignInRefused) as refused:
        users.sign_in("alice", PASSWORD)
    assert refused.value.locked_for is None
    assert users.list()[0].disabled
    users.enable("alice")
    for _ in range(2):
        with pytest.raises(SignInRefused):
            users.sign_in("alice", "wrong password here")
    assert users.list()[0].locked_for(clock()) == 600
    users.enable("alice")  # an operator lets them in again
    assert users.sign_in("alice", PASSWORD).name == "alice"
    users.passwd("alice", "a brand new password")
    with pytest.raises(SignInRefused):
        users.sign_in("alice", PASSWORD)
    assert users.sign_in("alice", "a brand new password").name == "alice"


def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(store: ReadStore) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    old = Users(UserStore(store), lockout_failures=3, lockout_s=60, hasher=weak)
    old.add("alice", PASSWORD, Role.viewer, [ALICE])
    before = UserStore(store).get("alice")
    assert before is not None and "m=8192" in before.password_hash
    current = Users(UserStore(store), lockout_failures=3, lockout_s=60)
    current.sign_in("alice", PASSWORD)
    after = UserStore(store).get("alice")
    assert after is not None and "m=65536" in after.password_hash
    assert current.sign_in("alice", PASSWORD).name == "alice"


# ------------------------------------------------------------------------- the CLI


def user_cli(folder: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADECORE, "user", *args], input=stdin, capture_output=True,
                          text=True, env=env_for(folder), timeout=120, check=False)


def open_accounts(folder: Path, *names: str) -> None:
    """Grants name opened accounts: open them as an operator would."""
    for name in names:
        opened = subprocess.run([*TRADECORE, "account", "open", name], capture_output=True,
                                text=True, env=env_for(folder), timeout=120, check=False)
        assert opened.returncode == 0, opened.stderr


def test_the_user_commands_as_an_operator_types_them(tmp_path: Path) -> None:
    open_accounts(tmp_path, "alice", "bob")
    added = user_cli(tmp_path, "add", "alice", "--role", "trader", "--account", "alice",
                     "--account", str(BOB), "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "added alice: trader" in added.stderr
    assert PASSWORD not in added.stdout + added.stderr
    risk = user_cli(tmp_path, "add", "rita", "--role", "risk", "--password-stdin",
                    stdin=PASSWORD + "\n")
    assert risk.returncode == 0, risk.stderr

    listed = user_cli(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    lines = sorted(listed.stdout.splitlines())
    assert lines == [f"alice\ttrader\tactive\t{','.join(sorted([str(ALICE), str(BOB)]))}",
                     "rita\trisk\tactive\t*"]
    assert "argon2" not in listed.stdout

    assert user_cli(tmp_path, "disable", "alice").returncode == 0
    assert "alice\ttrader\tdisabled" in user_cli(tmp_path, "list").stdout
    assert user_cli(tmp_path, "enable", "alice").returncode == 0
    changed = user_cli(tmp_path, "passwd", "alice", "--password-stdin",
                       stdin="another long password\n")
    assert changed.returncode == 0 and "password of alice changed" in changed.stderr

    store = ReadStore.sqlite(tmp_path / "readmodels.sqlite")
    try:
        users = Users(UserStore(store), lockout_failures=5, lockout_s=60)
        assert users.sign_in("alice", "another long password").role is Role.trader
    finally:
        store.close()


@pytest.mark.parametrize(("args", "stdin", "says"), [
    (("add", "alice", "--role", "trader", "--account", "alice", "--password-stdin"),
     "too short\n", "password breaks rule '12 to 1024 characters'"),
    (("add", "alice", "--role", "trader", "--password-stdin"), PASSWORD + "\n",
     "accounts=[] breaks rule 'trader names at least one account'"),
    (("add", "rita", "--role", "risk", "--account", "alice", "--password-stdin"),
     PASSWORD + "\n", "breaks rule 'risk covers every account: name none'"),
    (("add", "a b", "--role", "admin", "--password-stdin"), PASSWORD + "\n",
     "name='a b' breaks rule"),
    (("passwd", "nobody", "--password-stdin"), PASSWORD + "\n", "no user nobody"),
    (("disable", "nobody"), "", "no user nobody"),
    (("add", "carl", "--role", "trader", "--account", "alcie", "--password-stdin"),
     PASSWORD + "\n", "accounts='alcie' breaks rule 'accounts that are open"),
])
def test_bad_user_commands_say_why_in_one_line(tmp_path: Path, args: tuple[str, ...],
                                               stdin: str, says: str) -> None:
    if "--account" in args:
        open_accounts(tmp_path, "alice")
    done = user_cli(tmp_path, *args, stdin=stdin)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert "too short" not in done.stderr  # the password itself is never echoed
    assert user_cli(tmp_path, "list").stdout == ""


# ------------------------------------------------------------------------- POST /v1/session


def test_sign_in_over_http_gives_a_token_the_api_honours(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with live_server(tmp_path, user_lockout_failures=3, auth_failure_limit="8/minute",
                     refusal_delay_s=0) as server, server.client() as http:
        admin = server.auth(Role.admin)
        for name in ("alice", "bob"):
            opened = http.post("/v1/accounts", json={"name": name, "owner": name},
                               headers=admin)
            assert opened.status_code == 201, opened.text
        users = Users(UserStore(server.runtime.reads.get), lockout_failures=3, lockout_s=900)
        users.add("alice", PASSWORD, Role.trader, [ALICE])
        users.add("viv", PASSWORD, Role.viewer, [BOB])
        users.add("gone", PASSWORD, Role.admin, None)
        users.disable("gone")

        signed = http.post("/v1/session", json={"name": "alice", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        body = signed.json()
        assert (body["subject"], body["role"], body["accounts"]) == (
            "alice", "trader", [str(ALICE)])
        assert body["token_type"] == "bearer" and body["expires_in"] == 3600
        token = {"Authorization": f"Bearer {body['access_token']}"}
        seen = http.get("/v1/accounts", headers=token)
        assert [a["name"] for a in seen.json()] == ["alice"]  # only what the token covers
        placed = http.post("/v1/orders", headers=token, json={
            "account_id": str(BOB), "client_order_id": "x", "symbol": "7203", "side": "buy",
            "quantity": 100, "price": 74880})
        assert placed.status_code == 403 and placed.json()["field"] == "account_id"

        # wrong password, unknown name, disabled user: one and the same answer
        refusals = [http.post("/v1/session", json={"name": n, "password": p})
                    for n, p in (("alice", "wrong password!"), ("nobody", PASSWORD),
                                 ("gone", PASSWORD))]
        assert {r.status_code for r in refusals} == {401}
        assert len({(r.json()["detail"], r.json()["field"]) for r in refusals}) == 1
        assert refusals[0].json()["field"] == "credentials"
        assert refusals[0].headers["www-authenticate"].startswith("Bearer")

        # two more failures for alice (three in a row): locked, even with the password
        for _ in range(2):
            http.post("/v1/session", json={"name": "alice", "password": "wrong password!"})
        locked = http.post("/v1/session", json={"name": "alice", "password": PASSWORD})
        assert locked.status_code == 423, locked.text
        assert locked.json()["field"] == "name" and int(locked.headers["retry-after"]) > 0

        # over eight failures from this address in the minute: the address is refused
        viewer = http.post("/v1/session", json={"name": "viv", "password": PASSWORD})
        assert viewer.status_code == 200  # a success does not count
        failures = [http.post("/v1/session", json={"name": "viv", "password": "wrong pw!!"})
                    for _ in range(3)]  # the 7th, 8th and 9th
        assert [f.status_code for f in failures] == [401, 401, 429]
        refused = http.post("/v1/session", json={"name": "viv", "password": PASSWORD})
        assert refused.status_code == 429, refused.text
        assert refused.json()["field"] == "client" and "retry-after" in refused.headers

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert PASSWORD not in logged and "wrong password!" not in logged


def test_the_ticket_facts_of_a_symbol(tmp_path: Path) -> None:
    with live_server(tmp_path) as server, server.client() as http:
        headers = server.auth(Role.viewer, [ALICE])
        listed = http.get("/v1/instruments", headers=headers)
        assert listed.status_code == 200
        assert len(listed.json()) == len(server.runtime.app.universe)
        toyota = http.get("/v1/instruments/7203", headers=headers).json()
        rules = server.runtime.app.universe.get("7203")
        assert (toyota["lot_size"], toyota["base_price"]) == (100, rules.base_price)
        assert (toyota["lower_limit"], toyota["upper_limit"]) == (
            rules.limits.lower, rules.limits.upper)
        bands = toyota["ticks"]
        assert bands[0]["lower"] == rules.limits.lower
        assert bands[-1]["upper"] == rules.limits.upper
        for band in bands:  # each band's tick is the one the order check applies
            for price in (band["lower"], band["upper"]):
                assert rules.tick_size(price) == band["tick"] or price == band["lower"]
        unknown = http.get("/v1/instruments/0000", headers=headers)
        assert unknown.status_code == 404 and unknown.json()["field"] == "symbol"
        assert http.get("/v1/instruments/7203").status_code == 401


def test_a_refused_password_is_not_echoed(tmp_path: Path) -> None:
    with live_server(tmp_path, refusal_delay_s=0) as server, server.client() as http:
        too_long = "p" * 1025
        answer = http.post("/v1/session", json={"name": "alice", "password": too_long})
        assert answer.status_code == 422 and answer.json()["field"] == "password"
        assert too_long not in answer.text
        bad_name = http.post("/v1/session", json={"name": "a b", "password": PASSWORD})
        assert bad_name.status_code == 422 and PASSWORD not in bad_name.text
