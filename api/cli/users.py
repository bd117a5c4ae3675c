"""``tradecore user``: the people who sign in to the desk console.

Passwords are asked for with a hidden prompt (typed twice), or read from the first line
of stdin with ``--password-stdin`` for scripts (``printf '%s\\n' "$PW" | tradecore user
add ...``); they never appear on the command line, in the shell history or in output.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer
from rich.console import Console

from aggregates.ids import account_ref
from api.roles import Role
from infra.settings import get_settings

if TYPE_CHECKING:
    from api.users import Users

app = typer.Typer(no_args_is_help=True,
                  help="Add, list, disable users of the desk console; set their passwords.")
err = Console(stderr=True, soft_wrap=True)

PasswordStdin = Annotated[bool, typer.Option(
    "--password-stdin", help="Read the password from the first line of stdin (scripts).")]


def _users() -> Users:
    from api.users import Users, UserStore
    from api.wiring import read_store

    settings = get_settings()
    return Users(UserStore(read_store(settings)),
                 lockout_failures=settings.user_lockout_failures,
                 lockout_s=settings.user_lockout_s)




def _opened(given: list[str], accounts: list[UUID]) -> None:
    """Refuse a grant on an account nobody opened (a typo would make a user who can
    trade nothing); the event store says which are open."""
    from aggregates.account import Account
    from aggregates.errors import RuleViolation
    from api.wiring import trading_app

    app = trading_app(get_settings())
    try:
        for text, account_id in zip(given, accounts, strict=True):
            first = list(app.events.get(account_id, limit=1))
            if not first or not isinstance(first[0], Account.Event):
                raise RuleViolation("accounts", "accounts that are open (tradecore account "
                                    "open)", text)
    finally:
        app.close()


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _refused(error: Exception) -> typer.Exit:
    err.print(f"[red]refused[/]: {error}", markup=True, highlight=False)
    return typer.Exit(2)


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[Role, typer.Option("--role", help="What the user may do.")],
    account: Annotated[list[str] | None, typer.Option(
        "--account", help="Account name or id the user may see/trade (repeat; trader and "
                          "viewer only).")] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Add user NAME with ROLE (asks for the password)."""
    from api.users import check_grant, check_name

    accounts = [account_ref(a) for a in account] if account else None
    try:  # refuse a bad name or grant before asking for a password
        check_name(name)
        check_grant(role, accounts)
        _opened(account or [], accounts or [])
        users = _users()
        user = users.add(name, _password(password_stdin), role, accounts)
    except ValueError as error:
        raise _refused(error) from None
    scope = "every account" if user.accounts is None else ", ".join(sorted(map(str, user.accounts)))
    err.print(f"added {user.name}: {user.role} on {scope}", highlight=False)


@app.command()
def passwd(name: Annotated[str, typer.Argument(help="Sign-in name.")],
           password_stdin: PasswordStdin = False) -> None:
    """Set NAME's password (asks for it); also clears a lock."""
    from api.users import no_user

    try:
        users = _users()
        if users.store.get(name) is None:
            raise no_user(name)
        users.passwd(name, _password(password_stdin))
    except ValueError as error:
        raise _refused(error) from None
    err.print(f"password of {name} changed", highlight=False)


@app.command()
def disable(name: Annotated[str, typer.Argument(help="Sign-in name.")]) -> None:
    """Refuse NAME's sign-ins from now on (tokens already issued expire on their own)."""
    try:
        _users().disable(name)
    except ValueError as error:
        raise _refused(error) from None
    err.print(f"disabled {name}", highlight=False)


@app.command()
def enable(name: Annotated[str, typer.Argument(help="Sign-in name.")]) -> None:
    """Accept NAME's sign-ins again and clear a lock."""
    try:
        _users().enable(name)
    except ValueError as error:
        raise _refused(error) from None
    err.print(f"enabled {name}", highlight=False)


@app.command("list")
def list_users() -> None:
    """Users with role, accounts and state (never the hash)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for user in _users().list():
        scope = "*" if user.accounts is None else ",".join(sorted(map(str, user.accounts)))
        locked = user.locked_for(now)
        state = ("disabled" if user.disabled
                 else f"locked {locked}s" if locked is not None else "active")
        typer.echo(f"{user.name}\t{user.role}\t{state}\t{scope}")
