"""Who may call the API: OAuth2 bearer JWTs, four roles, and the accounts a token covers.

Tokens are HS256 JWTs signed with a key from a :class:`KeyRing` file. Every token names
its key in the header (``kid``) so keys can be rotated without a flag day: a rotation
makes a new key the signer while the old ones still verify, and an operator retires an
old key once every token it signed has expired (see ``docs/security.md``).

Roles split into two kinds, which is why the ``accounts`` claim is shaped per role:

* account-scoped: ``trader`` (sees and trades its accounts) and ``viewer`` (sees them);
  their tokens must list the accounts, so a leaked viewer token exposes those only;
* desk-wide: ``risk`` (sees everything, halts symbols, never trades) and ``admin``
  (everything, including opening accounts, deposits and withdrawals); their tokens
  carry ``accounts: "*"``.

HTTP callers get a :class:`Principal` from the dependency made by :func:`authenticator`;
WebSocket routes call :func:`principal_from_token`. Failures raise :class:`Unauthorized`
(401) or :class:`Forbidden` (403), which ``api.problems`` turns into problem+json.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import logging
import os
import secrets
import stat
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt

from api.roles import DESK_WIDE_ROLES as DESK_WIDE_ROLES
from api.roles import MAX_TTL_S as MAX_TTL_S
from api.roles import Role as Role

log = logging.getLogger(__name__)

ALGORITHM = "HS256"

_SECRET_BYTES = 32  # 256 bits: the HS256 key length RFC 7518 asks for
_REQUIRED_CLAIMS = ("exp", "iat", "sub", "role")
ALL_ACCOUNTS = "*"


class AuthError(Exception):
    """A token could not be accepted; ``reason`` is safe to show to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unauthorized(Exception):
    """HTTP 401: no usable bearer token. ``api.problems`` adds ``WWW-Authenticate``."""

    def __init__(self, reason: str, *, token_present: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        # RFC 6750 §3.1: a request without credentials gets no ``error`` code.
        self.token_present = token_present


class Forbidden(Exception):
    """HTTP 403: the caller is known but its token does not allow this.

    Shaped like ``aggregates.errors.DomainError`` (field, rule, value) so the problem
    body says which input hit which rule, e.g.
    ``Forbidden("account_id", "caller may trade this account", account_id)``.
    """

    def __init__(self, field: str, rule: str, value: Any, message: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        self.message = message or f"{field}={value!s} breaks rule '{rule}'"
        super().__init__(self.message)


# --------------------------------------------------------------------------- principal


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: who (``subject``), what role, which accounts.

    ``accounts`` is None for desk-wide roles (every account) and a non-empty set for
    trader and viewer; mixing them is refused so a permission check never has to guess.
    """

    subject: str
    role: Role
    accounts: frozenset[UUID] | None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ValueError(f"role={self.role!r} breaks rule 'one of {_role_names()}'")
        if self.role in DESK_WIDE_ROLES:
            if self.accounts is not None:
                raise ValueError(
                    f"accounts={sorted(map(str, self.accounts))} breaks rule "
                    f"'{self.role} covers every account'"
                )
        elif not self.accounts:
            raise ValueError(
                f"accounts={self.accounts!r} breaks rule '{self.role} names at least one account'"
            )

    def _covers(self, account_id: UUID) -> bool:
        return self.accounts is None or account_id in self.accounts

    def can_see(self, account_id: UUID) -> bool:
        return self._covers(account_id)

    def can_trade(self, account_id: UUID) -> bool:
        return self.role in (Role.trader, Role.admin) and self._covers(account_id)

    def can_halt(self) -> bool:
        return self.role in (Role.risk, Role.admin)

    def can_administer(self) -> bool:
        """Open accounts, deposit, withdraw."""
        return self.role is Role.admin


def _role_names() -> str:
    return ", ".join(r.value for r in Role)


def require_role(principal: Principal, *roles: Role) -> None:
    if principal.role not in roles:
        names = ", ".join(r.value for r in roles)
        raise Forbidden(
            "role",
            f"one of {names}",
            principal.role.value,
            f"{principal.subject} has role '{principal.role}'; this needs one of {names}",
        )


def require_see(principal: Principal, account_id: UUID) -> None:
    if not principal.can_see(account_id):
        raise Forbidden(
            "account_id",
            "caller may see this account",
            str(account_id),
            f"{principal.subject}'s token does not cover account {account_id}",
        )


def require_trade(principal: Principal, account_id: UUID) -> None:
    if not principal.can_trade(account_id):
        why = (
            f"role '{principal.role}' never trades"
            if principal.role in (Role.viewer, Role.risk)
            else f"{principal.subject}'s token does not cover account {account_id}"
        )
        raise Forbidden("account_id", "caller may trade this account", str(account_id), why)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class _Key:
    kid: str
    secret: bytes
    created_at: str


def _new_key() -> _Key:
    raw = secrets.token_bytes(_SECRET_BYTES)
    return _Key(
        kid=f"k-{secrets.token_hex(4)}",
        secret=raw,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyRing:
    """HS256 signing keys by key id, kept in one JSON file (mode 0600).

    The file is the hand-off between processes: the CLI rotates or retires keys in it
    and a running server notices (by the file's identity: inode, size, mtime) at the
    next sign or verify and reloads, so no restart is needed. Writes go to a temporary
    file renamed over the old one, under an ``flock`` on a sibling ``.lock`` file, so a
    reader never sees half a file and two operators cannot lose each other's change.

    File shape::

        {"active": "k-1a2b3c4d",
         "keys": {"k-1a2b3c4d": {"secret": "<base64url>", "created_at": "..."}, ...},
         "retired": ["k-0f0e0d0c"]}
    """

    def __init__(
        self, path: Path, keys: dict[str, _Key], active_kid: str, retired: Iterable[str] = ()
    ) -> None:
        if active_kid not in keys:
            raise ValueError(f"active={active_kid!r} breaks rule 'names a key in the ring'")
        self.path = Path(path)
        self._keys = dict(keys)
        self._active = active_kid
        self._retired = list(retired)
        self._identity: tuple[int, int, int] | None = None

    # -- loading and saving

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """The ring at ``path``; a ring with one fresh key when the file does not exist."""
        path = Path(path)
        if path.exists():  # writes are atomic renames: reading needs no lock (and a
            return cls._read(path)  # read-only mount, e.g. a k8s Secret, allows none)
        with _file_lock(path):
            if path.exists():
                ring = cls._read(path)
            else:
                first = _new_key()
                ring = cls(path, {first.kid: first}, first.kid)
                ring._write()
                log.info("created signing key %s in %s", first.kid, path)
        return ring

    @classmethod
    def _read(cls, path: Path) -> KeyRing:
        identity = _identity(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            keys = {
                kid: _Key(kid, _unb64(entry["secret"]), str(entry.get("created_at", "")))
                for kid, entry in document["keys"].items()
            }
            ring = cls(path, keys, document["active"], document.get("retired", []))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"jwt_keys_path={path} is not a readable key ring: {err}") from err
        short = [kid for kid, key in keys.items() if len(key.secret) < _SECRET_BYTES]
        if short:
            raise ValueError(f"jwt_keys_path={path}: keys {short} are shorter than 256 bits")
        if identity is not None and stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            log.warning("%s is readable by group or others; chmod 600 it", path)
        ring._identity = identity
        return ring

    def _document(self) -> dict[str, Any]:
        ordered = [self._active, *(kid for kid in self._keys if kid != self._active)]
        return {
            "active": self._active,
            "keys": {
                kid: {"secret": _b64(key.secret), "created_at": key.created_at}
                for kid in ordered
                for key in [self._keys[kid]]
            },
            "retired": self._retired,
        }

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".jwt-keys-", dir=self.path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(self._document(), out, indent=2)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._identity = _identity(self.path)

    def save(self) -> None:
        """Write the ring as it is in memory (rotate and retire already save)."""
        with _file_lock(self.path):
            self._write()

    def _refresh(self) -> None:
        """Reload when another process replaced the file (rotation by the CLI)."""
        current = _identity(self.path)
        if current is None or current == self._identity:
            return
        try:
            fresh = self._read(self.path)
        except ValueError:
            log.exception("keeping the loaded signing keys: the new key file is unreadable")
            self._identity = current
            return
        self._keys, self._active, self._retired = fresh._keys, fresh._active, fresh._retired
        self._identity = fresh._identity
        log.info("reloaded signing keys from %s (active %s)", self.path, self._active)

    # -- the keys

    def version(self) -> tuple[int, int, int] | None:
        """Changes whenever the key file does (rotation, retirement): verified-token
        caches key on it so a retired key stops working at once."""
        self._refresh()
        return self._identity

    @property
    def active_kid(self) -> str:
        self._refresh()
        return self._active

    def kids(self) -> list[str]:
        """Key ids that verify, the active one first."""
        self._refresh()
        return [self._active, *(kid for kid in self._keys if kid != self._active)]

    def created_at(self, kid: str) -> str:
        """When ``kid`` was made (ISO 8601, UTC), for operators deciding what to retire."""
        self._refresh()
        return self._keys[kid].created_at

    def rotate(self) -> str:
        """Make a new key the signer; the old ones keep verifying. Saved at once."""
        with _file_lock(self.path):
            self._refresh()
            key = _new_key()
            while key.kid in self._keys or key.kid in self._retired:
                key = _new_key()
            self._keys[key.kid] = key
            self._active = key.kid
            self._write()
        log.info("rotated signing key: %s is active", key.kid)
        return key.kid

    def retire(self, kid: str) -> None:
        """Stop accepting tokens signed by ``kid``. Saved at once."""
        with _file_lock(self.path):
            self._refresh()
            if kid == self._active:
                raise ValueError(
                    f"kid={kid!r} breaks rule 'the active key cannot be retired; rotate first'"
                )
            if kid not in self._keys:
                raise ValueError(f"kid={kid!r} breaks rule 'names a key in the ring'")
            del self._keys[kid]
            self._retired.append(kid)
            self._write()
        log.info("retired signing key %s", kid)

    # -- tokens

    def sign(self, claims: dict[str, Any]) -> str:
        self._refresh()
        key = self._keys[self._active]
        return jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})

    def verify(self, token: str, *, issuer: str, audience: str) -> dict[str, Any]:
        """The token's claims, or :class:`AuthError` with the reason it is refused."""
        self._refresh()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("token has no key id")
        if kid in self._retired:
            raise AuthError("signing key retired")
        key = self._keys.get(kid)
        if key is None:
            raise AuthError("unknown key id")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.secret,
                algorithms=[ALGORITHM],
                issuer=issuer,
                audience=audience,
                leeway=0,
                options={"require": list(_REQUIRED_CLAIMS)},
            )
        except jwt.PyJWTError as err:
            raise AuthError(_reason(err)) from None
        return claims


def _reason(err: jwt.PyJWTError) -> str:
    match err:
        case jwt.ExpiredSignatureError():
            return "token expired"
        case jwt.InvalidSignatureError():
            return "invalid signature"
        case jwt.InvalidAudienceError():
            return "wrong audience"
        case jwt.InvalidIssuerError():
            return "wrong issuer"
        case jwt.MissingRequiredClaimError():
            return f"missing claim '{err.claim}'"
        case jwt.ImmatureSignatureError():
            return "token not yet valid"
        case jwt.InvalidAlgorithmError():
            return "algorithm not allowed"
        case jwt.DecodeError():
            return "malformed token"
        case _:
            return "invalid token"


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


# --------------------------------------------------------------------------- tokens


def issue_token(
    keyring: KeyRing,
    *,
    subject: str,
    role: Role | str,
    accounts: Iterable[UUID] | None,
    ttl_s: int,
    issuer: str,
    audience: str,
    now: datetime | None = None,
) -> str:
    """A signed token; refuses (ValueError naming the field) anything verify would not honour."""
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject={subject!r} breaks rule 'a non-empty string'")
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role={role!r} breaks rule 'one of {_role_names()}'") from None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl_s={ttl_s!r} breaks rule '1 to {MAX_TTL_S} seconds (30 days)'")
    account_claim: str | list[str]
    if role in DESK_WIDE_ROLES:
        if accounts is not None:
            named = [str(a) for a in accounts]
            raise ValueError(f"accounts={named} breaks rule '{role} tokens cover every account'")
        account_claim = ALL_ACCOUNTS
    else:
        if accounts is None:
            raise ValueError(f"accounts=None breaks rule '{role} tokens name their accounts'")
        listed = list(accounts)
        bad = [a for a in listed if not isinstance(a, UUID)]
        if bad:
            raise ValueError(f"accounts={bad!r} breaks rule 'account ids are UUIDs'")
        if not listed:
            raise ValueError(f"accounts=[] breaks rule '{role} tokens name at least one account'")
        account_claim = sorted({str(a) for a in listed})
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now={now!r} breaks rule 'timezone-aware'")
    issued = int(now.timestamp())
    claims = {
        "sub": subject,
        "role": role.value,
        "accounts": account_claim,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "iss": issuer,
        "aud": audience,
        "jti": uuid.uuid4().hex,
    }
    return keyring.sign(claims)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """The caller a verified token describes; :class:`AuthError` for ill-shaped claims."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("malformed claim 'sub'")
    raw_role = claims.get("role")
    if not isinstance(raw_role, str) or raw_role not in Role.__members__:
        raise AuthError("malformed claim 'role'")
    role = Role(raw_role)
    raw = claims.get("accounts")
    accounts: frozenset[UUID] | None
    if raw == ALL_ACCOUNTS:
        accounts = None
    elif isinstance(raw, list) and raw and all(isinstance(a, str) for a in raw):
        try:
            accounts = frozenset(UUID(a) for a in raw)
        except ValueError:
            raise AuthError("malformed claim 'accounts'") from None
    else:
        raise AuthError("malformed claim 'accounts'")
    try:
        return Principal(subject, role, accounts)
    except ValueError:
        raise AuthError(f"claim 'accounts' does not fit role '{role}'") from None


def principal_from_token(
    keyring: KeyRing, token: str | None, issuer: str, audience: str
) -> Principal:
    """For WebSocket routes: the caller behind a raw token (``Bearer `` prefix allowed)."""
    token = bare_token(token)
    return principal_from_claims(keyring.verify(token, issuer=issuer, audience=audience))


def bare_token(token: str | None) -> str:
    """The token itself from what a client sent (``Bearer `` prefix allowed)."""
    if token is None or not token.strip():
        raise AuthError("missing bearer token")
    token = token.strip()
    scheme, _, rest = token.partition(" ")
    if rest and scheme.lower() == "bearer":
        token = rest.strip()
    return token


class HeldToken:
    """A token a long-lived connection (the WebSocket stream) was opened with.

    A socket outlives the moment its token was checked, so the token is checked again as
    time passes: :meth:`refusal` says why it no longer holds (``token expired``, or,
    once the key file has changed, whatever a fresh verification says, e.g. ``signing
    key retired``), and the connection is closed with it.
    """

    def __init__(self, keyring: KeyRing, token: str | None, issuer: str, audience: str
                 ) -> None:
        token = bare_token(token)
        self._keyring, self._issuer, self._audience = keyring, issuer, audience
        self._token = token
        self._version = keyring.version()
        claims = keyring.verify(token, issuer=issuer, audience=audience)
        self.principal = principal_from_claims(claims)
        self.expires_at = float(claims["exp"])

    def refusal(self) -> str | None:
        """None while the token still holds; else the reason it is refused now."""
        if time.time() >= self.expires_at:
            return "token expired"
        version = self._keyring.version()  # a stat of the key file
        if version != self._version:
            try:
                self._keyring.verify(self._token, issuer=self._issuer, audience=self._audience)
            except AuthError as err:
                return err.reason
            self._version = version
        return None


# --------------------------------------------------------------------------- requests

PRINCIPAL_SCOPE_KEY = "tradecore.principal"
"""Where :class:`api.gate.Gate` leaves the caller it authenticated, in the ASGI scope."""


class TokenVerifier:
    """Bearer tokens to principals, remembering the ones that verified.

    A verified token is remembered until it expires or the key file changes, so a client
    pays the signature check once, not on every order (it was 0.14 ms a request), and a
    flood of bad tokens from an address that is already refused costs nothing but the
    look-up (:class:`api.gate.Gate`).
    """

    def __init__(self, keyring: KeyRing, issuer: str, audience: str,
                 max_entries: int = 10_000) -> None:
        self.keyring, self.issuer, self.audience = keyring, issuer, audience
        self._max = max_entries
        self._verified: dict[str, tuple[Principal, float, Any]] = {}

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token that verified before and still holds; else None."""
        hit = self._verified.get(token)
        if hit is None:
            return None
        if hit[2] != self.keyring.version() or time.time() >= hit[1]:
            del self._verified[token]
            return None
        return hit[0]

    def verify(self, token: str) -> Principal:
        """The token's principal; :class:`AuthError` with the reason it is refused."""
        principal = self.remembered(token)
        if principal is not None:
            return principal
        version = self.keyring.version()
        claims = self.keyring.verify(token, issuer=self.issuer, audience=self.audience)
        principal = principal_from_claims(claims)
        if len(self._verified) >= self._max:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]), version)
        return principal


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization`` header value, or :class:`Unauthorized` saying
    what is wrong with the header (parsed as FastAPI's ``HTTPBearer`` does)."""
    if not header or not header.strip():
        raise Unauthorized("missing bearer token", token_present=False)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not scheme or not token or scheme.lower() != "bearer":
        raise Unauthorized("authorization scheme must be Bearer with a token")
    return token


def __getattr__(name: str) -> Any:
    """``bearer`` and ``authenticator`` (FastAPI dependencies) live in :mod:`api.bearer`,
    imported on first use: the command line needs keys and tokens, not FastAPI."""
    if name in ("bearer", "authenticator"):
        from api import bearer as dependencies

        return getattr(dependencies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
