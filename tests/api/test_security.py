"""Bearer tokens: what verifies, what is refused and why, rotation across processes, roles."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt
import pytest
from typer.testing import CliRunner, Result

from aggregates.ids import account_id
from api.security import (
    AuthError,
    Forbidden,
    KeyRing,
    Principal,
    Role,
    issue_token,
    principal_from_claims,
    principal_from_token,
    require_role,
    require_see,
    require_trade,
)

ISS = "tradecore-test"
AUD = "tradecore-api-test"
OWN = account_id("alice")
OTHER = account_id("bob")


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load_or_create(tmp_path / "keys" / "jwt-keys.json")


def token(ring: KeyRing, role: Role | str = Role.trader, **overrides: object) -> str:
    args: dict[str, object] = {
        "subject": "alice",
        "role": role,
        "accounts": None if role in (Role.risk, Role.admin) else [OWN],
        "ttl_s": 600,
        "issuer": ISS,
        "audience": AUD,
    }
    args.update(overrides)
    return issue_token(ring, **args)  # type: ignore[arg-type]


def reason(ring: KeyRing, raw: str, issuer: str = ISS, audience: str = AUD) -> str:
    with pytest.raises(AuthError) as caught:
        ring.verify(raw, issuer=issuer, audience=audience)
    return caught.value.reason


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ----------------------------------------------------------------------------- key ring


def test_key_file_is_private_and_holds_one_active_key(ring: KeyRing) -> None:
    mode = stat.S_IMODE(os.stat(ring.path).st_mode)
    assert mode == 0o600
    document = json.loads(ring.path.read_text())
    assert document["active"] == ring.active_kid
    assert ring.kids() == [ring.active_kid]
    assert ring.active_kid.startswith("k-") and len(ring.active_kid) == 10
    assert len(_unb64(document["keys"][ring.active_kid]["secret"])) == 32


def test_loading_again_reuses_the_file(ring: KeyRing) -> None:
    again = KeyRing.load_or_create(ring.path)
    assert again.active_kid == ring.active_kid
    assert again.verify(token(ring), issuer=ISS, audience=AUD)["sub"] == "alice"


def test_corrupt_key_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "jwt-keys.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="jwt_keys_path"):
        KeyRing.load_or_create(path)
    assert path.read_text() == "{not json"


# ----------------------------------------------------------------------------- verify


def test_round_trip_carries_every_claim(ring: KeyRing) -> None:
    now = datetime.now(UTC)
    raw = token(ring, now=now)
    assert jwt.get_unverified_header(raw)["kid"] == ring.active_kid
    claims = ring.verify(raw, issuer=ISS, audience=AUD)
    assert claims["sub"] == "alice"
    assert claims["role"] == "trader"
    assert claims["accounts"] == [str(OWN)]
    assert claims["iss"] == ISS and claims["aud"] == AUD
    assert claims["iat"] == claims["nbf"] == int(now.timestamp())
    assert claims["exp"] == claims["iat"] + 600
    assert isinstance(claims["jti"], str) and claims["jti"]
    assert principal_from_claims(claims) == Principal("alice", Role.trader, frozenset({OWN}))


def test_each_token_has_its_own_id(ring: KeyRing) -> None:
    first = ring.verify(token(ring), issuer=ISS, audience=AUD)
    second = ring.verify(token(ring), issuer=ISS, audience=AUD)
    assert first["jti"] != second["jti"]


def test_expired_token_is_refused(ring: KeyRing) -> None:
    raw = token(ring, ttl_s=60, now=datetime.now(UTC) - timedelta(minutes=5))
    assert reason(ring, raw) == "token expired"


def test_token_from_the_future_is_refused(ring: KeyRing) -> None:
    raw = token(ring, now=datetime.now(UTC) + timedelta(minutes=5))
    assert reason(ring, raw) == "token not yet valid"


def test_tampered_payload_is_refused(ring: KeyRing) -> None:
    header, payload, signature = token(ring, role=Role.viewer).split(".")
    claims = json.loads(_unb64(payload))
    claims["role"] = "admin"
    claims["accounts"] = "*"
    forged = ".".join([header, _b64(json.dumps(claims).encode()), signature])
    assert reason(ring, forged) == "invalid signature"


def test_tampered_signature_is_refused(ring: KeyRing) -> None:
    header, payload, signature = token(ring).split(".")
    flipped = bytearray(_unb64(signature))
    flipped[0] ^= 0x01
    assert reason(ring, ".".join([header, payload, _b64(bytes(flipped))])) == "invalid signature"


def test_unsigned_and_garbage_tokens_are_refused(ring: KeyRing) -> None:
    claims = ring.verify(token(ring), issuer=ISS, audience=AUD)
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": ring.active_kid})
    assert reason(ring, unsigned) == "algorithm not allowed"
    assert reason(ring, "not-a-jwt") == "malformed token"


def test_unknown_key_id_is_refused(ring: KeyRing, tmp_path: Path) -> None:
    stranger = KeyRing.load_or_create(tmp_path / "elsewhere.json")
    assert reason(ring, token(stranger)) == "unknown key id"


def test_wrong_audience_and_issuer_are_refused(ring: KeyRing) -> None:
    raw = token(ring)
    assert reason(ring, raw, audience="someone-else") == "wrong audience"
    assert reason(ring, raw, issuer="someone-else") == "wrong issuer"


def test_required_claims_must_be_present(ring: KeyRing) -> None:
    now = int(datetime.now(UTC).timestamp())
    claims = {"sub": "alice", "iat": now, "exp": now + 60, "iss": ISS, "aud": AUD}
    assert reason(ring, ring.sign(claims)) == "missing claim 'role'"
    claims = {"sub": "alice", "role": "risk", "iat": now, "iss": ISS, "aud": AUD}
    assert reason(ring, ring.sign(claims)) == "missing claim 'exp'"


def test_ill_shaped_claims_are_refused() -> None:
    base = {"sub": "alice", "role": "trader", "accounts": [str(OWN)]}
    with pytest.raises(AuthError, match="role"):
        principal_from_claims({**base, "role": "superuser"})
    with pytest.raises(AuthError, match="accounts"):
        principal_from_claims({**base, "accounts": ["not-a-uuid"]})
    with pytest.raises(AuthError, match="accounts"):
        principal_from_claims({**base, "accounts": "*"})  # a trader never covers all
    with pytest.raises(AuthError, match="accounts"):
        principal_from_claims({**base, "role": "admin"})  # admin always covers all
    with pytest.raises(AuthError, match="sub"):
        principal_from_claims({**base, "sub": ""})


def test_websocket_token_with_or_without_bearer_prefix(ring: KeyRing) -> None:
    raw = token(ring, role=Role.risk)
    expected = Principal("alice", Role.risk, None)
    assert principal_from_token(ring, raw, ISS, AUD) == expected
    assert principal_from_token(ring, f"Bearer {raw}", ISS, AUD) == expected
    with pytest.raises(AuthError, match="missing bearer token"):
        principal_from_token(ring, None, ISS, AUD)


# ----------------------------------------------------------------------------- rotation


def test_rotation_keeps_old_tokens_and_signs_with_the_new_key(ring: KeyRing) -> None:
    old_kid = ring.active_kid
    old_token = token(ring)
    new_kid = ring.rotate()
    assert new_kid != old_kid and ring.active_kid == new_kid
    assert ring.kids() == [new_kid, old_kid]
    assert ring.verify(old_token, issuer=ISS, audience=AUD)["sub"] == "alice"
    new_token = token(ring)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert ring.verify(new_token, issuer=ISS, audience=AUD)["sub"] == "alice"


def test_retired_key_no_longer_verifies_and_active_key_cannot_retire(ring: KeyRing) -> None:
    old_kid = ring.active_kid
    old_token = token(ring)
    ring.rotate()
    with pytest.raises(ValueError, match="active key"):
        ring.retire(ring.active_kid)
    ring.retire(old_kid)
    assert old_kid not in ring.kids()
    assert reason(ring, old_token) == "signing key retired"
    with pytest.raises(ValueError, match="names a key"):
        ring.retire("k-00000000")


def test_a_second_process_sees_rotation_and_retirement(ring: KeyRing) -> None:
    """The server's ring notices a rotation the CLI saved, without a restart."""
    server = KeyRing.load_or_create(ring.path)
    old_kid = server.active_kid
    old_token = token(server)

    new_kid = ring.rotate()  # the "CLI" process
    assert server.active_kid == new_kid
    new_token = token(ring)
    assert server.verify(new_token, issuer=ISS, audience=AUD)["sub"] == "alice"
    assert jwt.get_unverified_header(token(server))["kid"] == new_kid

    ring.retire(old_kid)
    assert reason(server, old_token) == "signing key retired"
    assert server.kids() == [new_kid]
    assert stat.S_IMODE(os.stat(ring.path).st_mode) == 0o600


def test_rotations_from_two_rings_are_both_kept(ring: KeyRing) -> None:
    """Each rotation re-reads the file under a lock, so neither operator loses a key."""
    other = KeyRing.load_or_create(ring.path)
    first = ring.rotate()
    second = other.rotate()
    fresh = KeyRing.load_or_create(ring.path)
    assert fresh.active_kid == second
    assert set(fresh.kids()) >= {first, second}


# ----------------------------------------------------------------------------- issuing


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"role": Role.trader, "accounts": None}, "accounts"),
        ({"role": Role.viewer, "accounts": None}, "accounts"),
        ({"role": Role.viewer, "accounts": []}, "accounts"),
        ({"role": Role.risk, "accounts": [OWN]}, "accounts"),
        ({"role": Role.trader, "accounts": ["not-a-uuid"]}, "accounts"),
        ({"role": "superuser"}, "role"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": -5}, "ttl_s"),
        ({"ttl_s": 30 * 24 * 3600 + 1}, "ttl_s"),
        ({"subject": " "}, "subject"),
        ({"now": datetime(2026, 1, 5, 9, 0)}, "now"),
    ],
)
def test_issue_token_refuses_tokens_it_should_not_make(
    ring: KeyRing, overrides: dict[str, object], field: str
) -> None:
    args: dict[str, Any] = {"role": Role.trader, "accounts": [OWN]}
    args.update(overrides)
    with pytest.raises(ValueError, match=f"^{field}="):
        token(ring, **args)


def test_longest_ttl_is_thirty_days(ring: KeyRing) -> None:
    claims = ring.verify(token(ring, ttl_s=30 * 24 * 3600), issuer=ISS, audience=AUD)
    assert claims["exp"] - claims["iat"] == 30 * 24 * 3600


# ----------------------------------------------------------------------------- roles

TRADER = Principal("t", Role.trader, frozenset({OWN}))
VIEWER = Principal("v", Role.viewer, frozenset({OWN}))
RISK = Principal("r", Role.risk, None)
ADMIN = Principal("a", Role.admin, None)

# principal, account -> (see, trade); then halt, administer per principal
MATRIX: list[tuple[Principal, UUID, bool, bool]] = [
    (TRADER, OWN, True, True),
    (TRADER, OTHER, False, False),
    (VIEWER, OWN, True, False),
    (VIEWER, OTHER, False, False),
    (RISK, OWN, True, False),
    (RISK, OTHER, True, False),
    (ADMIN, OWN, True, True),
    (ADMIN, OTHER, True, True),
]


@pytest.mark.parametrize(("principal", "account", "see", "trade"), MATRIX)
def test_permission_matrix_per_account(
    principal: Principal, account: UUID, see: bool, trade: bool
) -> None:
    assert principal.can_see(account) is see
    assert principal.can_trade(account) is trade
    if see:
        require_see(principal, account)
    else:
        with pytest.raises(Forbidden) as caught:
            require_see(principal, account)
        assert caught.value.field == "account_id"
        assert caught.value.rule == "caller may see this account"
    if trade:
        require_trade(principal, account)
    else:
        with pytest.raises(Forbidden) as caught:
            require_trade(principal, account)
        assert caught.value.rule == "caller may trade this account"
        assert caught.value.value == str(account)


@pytest.mark.parametrize(
    ("principal", "halt", "administer"),
    [(TRADER, False, False), (VIEWER, False, False), (RISK, True, False), (ADMIN, True, True)],
)
def test_permission_matrix_desk_wide(principal: Principal, halt: bool, administer: bool) -> None:
    assert principal.can_halt() is halt
    assert principal.can_administer() is administer
    if administer:
        require_role(principal, Role.admin)
    else:
        with pytest.raises(Forbidden) as caught:
            require_role(principal, Role.admin)
        assert caught.value.field == "role"
        assert caught.value.value == principal.role.value


def test_principal_shape_follows_role() -> None:
    with pytest.raises(ValueError, match="accounts"):
        Principal("t", Role.trader, None)
    with pytest.raises(ValueError, match="accounts"):
        Principal("t", Role.viewer, frozenset())
    with pytest.raises(ValueError, match="accounts"):
        Principal("a", Role.admin, frozenset({OWN}))


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tradecore auth`` against a key file of its own (settings read from the env)."""
    from infra.settings import get_settings

    path = tmp_path / "cli" / "jwt-keys.json"
    monkeypatch.setenv("TRADECORE_JWT_KEYS_PATH", str(path))
    monkeypatch.setenv("TRADECORE_JWT_ISSUER", ISS)
    monkeypatch.setenv("TRADECORE_JWT_AUDIENCE", AUD)
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


def auth(*args: str) -> Result:
    from api.cli.auth import app

    return CliRunner().invoke(app, list(args))


def test_cli_token_names_accounts_by_name_or_id(cli: Path) -> None:
    run = auth(
        "token",
        "--subject",
        "alice",
        "--role",
        "trader",
        "--account",
        "alice",
        "--account",
        str(OTHER),
        "--ttl",
        "120",
    )
    assert run.exit_code == 0, run.output
    raw = run.stdout.strip()
    claims = KeyRing.load_or_create(cli).verify(raw, issuer=ISS, audience=AUD)
    assert sorted(claims["accounts"]) == sorted([str(OWN), str(OTHER)])
    assert claims["exp"] - claims["iat"] == 120
    assert "trader token for alice" in run.stderr


def test_cli_refuses_a_trader_token_without_accounts(cli: Path) -> None:
    run = auth("token", "--subject", "alice", "--role", "trader")
    assert run.exit_code == 2
    assert "accounts" in run.stderr and "--account" in run.stderr
    assert run.stdout == ""


def test_cli_rotate_keys_retire(cli: Path) -> None:
    first = auth("keys")
    assert first.exit_code == 0
    (old_kid,) = [line.split()[0] for line in first.stdout.splitlines()]
    old_token = auth("token", "--subject", "r", "--role", "risk").stdout.strip()

    rotated = auth("rotate")
    assert rotated.exit_code == 0
    new_kid = rotated.stdout.strip()
    listing = auth("keys").stdout.splitlines()
    assert listing[0].startswith(f"{new_kid}  active")
    assert listing[1].startswith(f"{old_kid}  verify")

    refused = auth("retire", new_kid)
    assert refused.exit_code == 2 and "active key" in refused.stderr
    assert auth("retire", old_kid).exit_code == 0
    assert [line.split()[0] for line in auth("keys").stdout.splitlines()] == [new_kid]
    assert reason(KeyRing.load_or_create(cli), old_token) == "signing key retired"
