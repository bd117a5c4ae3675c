"""The ``tradecore`` command line.

Every ``tradecore`` call imports this module to find its command, so the modules it
imports keep their heavy dependencies (FastAPI, uvicorn, polars, torch, the stages and
their Numba kernels, the read models) inside the commands that use them: `tradecore
account show` starts in a fraction of a second.
"""

from __future__ import annotations

import inspect
import re

import typer

from api.cli import auth, backtest, model, users
from api.cli.audit import audit_app, events_app
from api.cli.demo import demo
from api.cli.kafka import kafka_app
from api.cli.readmodels import db_app, projections_app
from api.cli.serve import serve
from api.cli.trading import account_app, events, market_app, order_app
from api.cli.worker import worker

app = typer.Typer(
    name="tradecore",
    help="Event-sourced trading core for Japanese equities.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command()(demo)
app.add_typer(account_app, name="account")
app.add_typer(order_app, name="order")
app.add_typer(market_app, name="market")
events_app.command("show", hidden=True)(events)  # `tradecore events ID`, as before
app.add_typer(events_app, name="events")
app.add_typer(audit_app, name="audit")
app.command(help="Serve the HTTP API with the saga, matching and projection stages.")(serve)
app.command(help="Run one stage alone: of the order flow (relay, matching, saga, "
                 "projections; over the log or, TRADECORE_BUS=kafka, Kafka), or the "
                 "market-data loop (streams: a Faust worker on Kafka).")(worker)
app.add_typer(db_app, name="db")
app.add_typer(kafka_app, name="kafka")
app.add_typer(projections_app, name="projections")
app.add_typer(auth.app, name="auth", help="Issue tokens and rotate signing keys.")
app.add_typer(users.app, name="user", help="Desk console users: add, list, disable, passwd.")
app.add_typer(model.app, name="model", help="Train, evaluate and serve the ATFT-GAT-FAN model.")
app.add_typer(backtest.app, name="backtest",
              help="Replay history: daily bars through the live order flow, or "
                   "`intraday` execution agents on a LOBSTER day.")


def _prose(text: str | None) -> str | None:
    """Help text with each paragraph on one line: typer keeps the line breaks of every
    paragraph after the first, so a docstring's wrapping showed up mid-sentence."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p).strip() for p in paragraphs)


def _unwrap_help(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        command.help = _prose(command.help or inspect.getdoc(command.callback))
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _unwrap_help(group.typer_instance)


_unwrap_help(app)


def main() -> None:
    app()
