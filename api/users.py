"""People who sign in to the desk console: name, argon2id password hash, role, accounts.

A person signs in with a name and a password (``POST /v1/session``) and gets the very
bearer token ``tradecore auth token`` would issue for the same role and accounts, so
everything behind the sign-in (the gate, the routes, the stream) stays as it is.

Why these choices:

* **argon2id** (``argon2-cffi``'s :class:`~argon2.PasswordHasher`, RFC 9106 parameters):
  memory-hard, so a stolen table is slow to guess through; a hash made with older
  parameters is replaced at the next successful sign-in.
* **Lockout**: ``TRADECORE_USER_LOCKOUT_FAILURES`` failures in a row lock the name for
  ``TRADECORE_USER_LOCKOUT_S`` seconds (423), whatever password comes next. Names that
  do not exist lock the same way (counted in memory), and an unknown name costs the same
  hash check as a known one, so neither the answer nor its timing says whether a name
  exists. The per-address failed-auth limit (429) applies on top.
* **Storage**: a ``users`` table beside the read models (migration 3 of
  ``projections.schema``): SQLite embedded, PostgreSQL distributed. It is not a
  projection; rebuilding the read models leaves it alone.

Passwords are never stored, logged or echoed; only the hash is kept.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aggregates.errors import Conflict, NotFound, RuleViolation
from api.roles import DESK_WIDE_ROLES, Role
from projections.store import ReadStore

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MIN_PASSWORD = 12
"""Shortest password accepted: NIST SP 800-63B asks for at least 8; a desk can afford 12."""
MAX_PASSWORD = 1024
"""Longest password accepted: hashing cost grows with the input, so it is bounded."""
_PHANTOM_NAMES = 10_000
"""Unknown names whose failures are remembered (the oldest are forgotten first)."""

_COLUMNS = ("name", "password_hash", "role", "accounts", "disabled", "failures",
            "locked_until", "created_at", "updated_at")


@dataclass(frozen=True)
class User:
    """A console user as stored (the hash stays inside this module's callers)."""

    name: str
    password_hash: str
    role: Role
    accounts: frozenset[UUID] | None  # None: every account (risk, admin)
    disabled: bool
    failures: int
    locked_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def locked_for(self, now: datetime) -> int | None:
        """Whole seconds the user stays locked, or None when not locked."""
        if self.locked_until is None or self.locked_until <= now:
            return None
        return max(1, int((self.locked_until - now).total_seconds() + 0.999))


class SignInRefused(Exception):
    """The name and password were not accepted. ``locked_for`` (seconds) is set when the
    name is locked; otherwise the caller learns nothing about which part was wrong."""

    def __init__(self, locked_for: int | None = None) -> None:
        super().__init__("name or password not accepted")
        self.locked_for = locked_for


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RuleViolation("name", "1 to 64 of A-Z a-z 0-9 _ . : -", name)
    return name


def check_password(password: str) -> str:
    """Refuse a password that is too short or too long; the message never holds it."""
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise RuleViolation("password", f"{MIN_PASSWORD} to {MAX_PASSWORD} characters", None,
                            f"password breaks rule '{MIN_PASSWORD} to {MAX_PASSWORD} "
                            f"characters'")
    return password


def check_grant(role: Role | str, accounts: Iterable[UUID] | None
                ) -> tuple[Role, frozenset[UUID] | None]:
    """The role and accounts a user may hold, shaped as tokens need them (see
    ``api.security``): desk-wide roles cover every account, the others name theirs."""
    try:
        role = Role(role)
    except ValueError:
        raise RuleViolation("role", "one of " + ", ".join(r.value for r in Role), role) from None
    listed = None if accounts is None else frozenset(accounts)
    if role in DESK_WIDE_ROLES:
        if listed:
            raise RuleViolation("accounts", f"{role} covers every account: name none",
                                sorted(map(str, listed)))
        return role, None
    if not listed:
        raise RuleViolation("accounts", f"{role} names at least one account", [])
    return role, listed


def no_user(name: str) -> NotFound:
    return NotFound("name", "an existing user", name, f"no user {name}")


class UserStore:
    """The ``users`` table, through whichever read-model connection this thread holds."""

    def __init__(self, store: ReadStore | Callable[[], ReadStore]) -> None:
        self._store = store

    @property
    def store(self) -> ReadStore:
        return self._store if isinstance(self._store, ReadStore) else self._store()

    def _user(self, row: tuple[object, ...]) -> User:
        store = self.store
        values = dict(zip(_COLUMNS, row, strict=True))
        raw = json.loads(str(values["accounts"]))
        accounts = None if raw == "*" else frozenset(UUID(a) for a in raw)
        locked = values["locked_until"]
        return User(
            name=str(values["name"]), password_hash=str(values["password_hash"]),
            role=Role(str(values["role"])), accounts=accounts,
            disabled=bool(values["disabled"]), failures=int(values["failures"]),  # type: ignore[call-overload]
            locked_until=None if locked is None else store.moment(locked),
            created_at=store.moment(values["created_at"]),
            updated_at=store.moment(values["updated_at"]))

    def get(self, name: str) -> User | None:
        row = self.store.fetchone(f"SELECT {', '.join(_COLUMNS)} FROM users WHERE name = %s",
                                  (name,))
        return None if row is None else self._user(row)

    def all(self) -> list[User]:
        rows = self.store.fetchall(f"SELECT {', '.join(_COLUMNS)} FROM users ORDER BY name")
        return [self._user(row) for row in rows]

    def insert(self, name: str, password_hash: str, role: Role,
               accounts: frozenset[UUID] | None, now: datetime) -> bool:
        """False when the name is taken (the insert is the check: no race)."""
        store = self.store
        claim = "*" if accounts is None else sorted(map(str, accounts))
        cursor = store.execute(
            "INSERT INTO users (name, password_hash, role, accounts, disabled, failures, "
            "locked_until, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 0, NULL, %s, %s) "
            "ON CONFLICT (name) DO NOTHING",
            (name, password_hash, role.value, json.dumps(claim), False, store.ts(now),
             store.ts(now)))
        return bool(cursor.rowcount == 1)

    def update(self, name: str, now: datetime, **values: object) -> bool:
        """Set columns of one user; False when there is no such user."""
        store = self.store
        assignments = ", ".join(f"{column} = %s" for column in values)
        cursor = store.execute(
            f"UPDATE users SET {assignments}, updated_at = %s WHERE name = %s",
            (*values.values(), store.ts(now), name))
        return bool(cursor.rowcount == 1)

    def failed(self, name: str, limit: int, lock_until: datetime, now: datetime) -> None:
        """Count one failure; the ``limit``-th in a row locks the user (one statement, so
        concurrent failures are all counted)."""
        store = self.store
        store.execute(
            "UPDATE users SET "
            "locked_until = CASE WHEN failures + 1 >= %s THEN %s ELSE locked_until END, "
            "failures = CASE WHEN failures + 1 >= %s THEN 0 ELSE failures + 1 END, "
            "updated_at = %s WHERE name = %s",
            (limit, store.ts(lock_until), limit, store.ts(now), name))


class Users:
    """Add, change and sign in users; the rules (names, password length, role and
    accounts, lockout) live here, the SQL in :class:`UserStore`."""

    def __init__(self, store: UserStore, *, lockout_failures: int, lockout_s: int,
                 hasher: PasswordHasher | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.lockout_failures = lockout_failures
        self.lockout = timedelta(seconds=lockout_s)
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        self._decoy = self.hasher.hash("not a password anyone has: timing decoy")
        self._phantoms: OrderedDict[str, tuple[int, datetime | None]] = OrderedDict()
        self._phantom_lock = threading.Lock()

    # -- administration (the CLI) ------------------------------------------------------
    def add(self, name: str, password: str, role: Role | str,
            accounts: Iterable[UUID] | None) -> User:
        check_name(name)
        grant_role, grant_accounts = check_grant(role, accounts)
        check_password(password)
        if not self.store.insert(name, self.hasher.hash(password), grant_role, grant_accounts,
                                 self.clock()):
            raise Conflict("name", "not taken by another user", name, f"user {name} exists")
        user = self.store.get(name)
        assert user is not None
        return user

    def passwd(self, name: str, password: str) -> None:
        """A new password; clears failures and any lock (an operator chose to let them in)."""
        check_password(password)
        if not self.store.update(name, self.clock(), password_hash=self.hasher.hash(password),
                                 failures=0, locked_until=None):
            raise no_user(name)

    def disable(self, name: str) -> None:
        """No more sign-ins; tokens already issued run out within their short lifetime."""
        if not self.store.update(name, self.clock(), disabled=True):
            raise no_user(name)

    def enable(self, name: str) -> None:
        """Sign-ins again, with the failure count and any lock cleared."""
        if not self.store.update(name, self.clock(), disabled=False, failures=0,
                                 locked_until=None):
            raise no_user(name)

    def list(self) -> list[User]:
        return self.store.all()

    # -- sign-in (the API) -------------------------------------------------------------
    def sign_in(self, name: str, password: str) -> User:
        """The user, when ``password`` is theirs and they are enabled and not locked;
        :class:`SignInRefused` otherwise (with the lock's seconds when locked)."""
        now = self.clock()
        user = self.store.get(name) if NAME_PATTERN.fullmatch(name) else None
        if user is None:
            self._phantom_sign_in(name, password, now)
        assert user is not None
        locked_for = user.locked_for(now)
        if locked_for is not None:
            raise SignInRefused(locked_for)
        if not self._verify(user.password_hash, password):
            self.store.failed(user.name, self.lockout_failures, now + self.lockout, now)
            after = self.store.get(user.name)
            raise SignInRefused(after.locked_for(now) if after is not None else None)
        if user.disabled:
            raise SignInRefused()  # checked after the password: no hint it is right
        changes: dict[str, object] = {}
        if user.failures or user.locked_until is not None:
            changes.update(failures=0, locked_until=None)
        if self._needs_rehash(user.password_hash):
            changes["password_hash"] = self.hasher.hash(password)
        if changes:
            self.store.update(user.name, now, **changes)
        return user

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _needs_rehash(self, password_hash: str) -> bool:
        try:
            return bool(self.hasher.check_needs_rehash(password_hash))
        except InvalidHashError:
            return False

    def _phantom_sign_in(self, name: str, password: str, now: datetime) -> None:
        """An unknown name: the same hash check, the same lockout, then refused."""
        with self._phantom_lock:
            failures, until = self._phantoms.pop(name, (0, None))
        if until is not None and until > now:
            with self._phantom_lock:
                self._phantoms[name] = (failures, until)
            raise SignInRefused(max(1, int((until - now).total_seconds() + 0.999)))
        self._verify(self._decoy, password)
        failures += 1
        locked_for = None
        if failures >= self.lockout_failures:
            failures, until = 0, now + self.lockout
            locked_for = int(self.lockout.total_seconds())
        with self._phantom_lock:
            self._phantoms[name] = (failures, until)
            while len(self._phantoms) > _PHANTOM_NAMES:
                self._phantoms.popitem(last=False)
        raise SignInRefused(locked_for)
