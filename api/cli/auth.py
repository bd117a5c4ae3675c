"""``tradecore auth``: issue bearer tokens and manage the keys that sign them.

The key file (``TRADECORE_JWT_KEYS_PATH``) is shared with the running server, which
picks up a rotation or retirement at its next request; no restart. The token goes to
stdout alone so ``TOKEN=$(tradecore auth token ...)`` works; what it grants goes to
stderr.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from aggregates.ids import account_ref
from api.roles import MAX_TTL_S, Role
from infra.settings import get_settings

if TYPE_CHECKING:
    from api.security import KeyRing

app = typer.Typer(
    no_args_is_help=True,
    help="Issue bearer tokens; rotate, list and retire their signing keys.",
)
err = Console(stderr=True, soft_wrap=True)


def _keyring() -> KeyRing:
    from api.security import KeyRing  # PyJWT and the key file: only when a command runs

    try:
        return KeyRing.load_or_create(get_settings().jwt_keys_path)
    except ValueError as error:
        err.print(f"[red]refused[/]: {error}")
        raise typer.Exit(2) from None




@app.command()
def token(
    subject: Annotated[str, typer.Option("--subject", help="Who the token is for (`sub`).")],
    role: Annotated[Role, typer.Option("--role", help="What the holder may do.")],
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account",
            help="Account name or id the token covers (repeat; trader and viewer only).",
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl", help=f"Lifetime in seconds (default from settings, max {MAX_TTL_S})."
        ),
    ] = None,
) -> None:
    """Print a signed token for SUBJECT with ROLE."""
    from api.security import issue_token

    settings = get_settings()
    ring = _keyring()
    accounts = [account_ref(a) for a in account] if account else None
    ttl_s = settings.token_ttl_s if ttl is None else ttl
    now = datetime.now(UTC)
    try:
        raw = issue_token(
            ring,
            subject=subject,
            role=role,
            accounts=accounts,
            ttl_s=ttl_s,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            now=now,
        )
    except ValueError as error:
        hint = " (pass --account NAME_OR_ID)" if "accounts=None" in str(error) else ""
        err.print(f"[red]refused[/]: {error}{hint}")
        raise typer.Exit(2) from None
    scope = "every account" if accounts is None else ", ".join(map(str, accounts))
    expires = datetime.fromtimestamp(int(now.timestamp()) + ttl_s, UTC).isoformat()
    err.print(f"{role} token for {subject} on {scope}; key {ring.active_kid}; expires {expires}")
    typer.echo(raw)


@app.command()
def rotate() -> None:
    """Make a new signing key active; tokens signed by the old keys stay valid."""
    ring = _keyring()
    kid = ring.rotate()
    err.print(
        f"new tokens are signed with {kid}; retire the old keys once their tokens have "
        f"expired (at most {get_settings().token_ttl_s} s by default, {MAX_TTL_S} s at most)"
    )
    typer.echo(kid)


@app.command()
def keys() -> None:
    """List the key ids that verify tokens, the active (signing) one marked."""
    ring = _keyring()
    active = ring.active_kid
    for kid in ring.kids():
        mark = "active" if kid == active else "verify"
        typer.echo(f"{kid}  {mark:<6}  created {ring.created_at(kid)}")


@app.command()
def retire(kid: Annotated[str, typer.Argument(help="Key id from `tradecore auth keys`.")]) -> None:
    """Stop accepting tokens signed by KID (never the active key)."""
    ring = _keyring()
    try:
        ring.retire(kid)
    except ValueError as error:
        err.print(f"[red]refused[/]: {error}")
        raise typer.Exit(2) from None
    err.print(f"retired {kid}: tokens it signed are now refused")
