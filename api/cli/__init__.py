"""The ``tradecore`` command line."""

from __future__ import annotations

import typer

from api.cli import auth, model
from api.cli.demo import demo
from api.cli.readmodels import db_app, projections_app
from api.cli.serve import serve, worker
from api.cli.trading import account_app, events, market_app, order_app

app = typer.Typer(
    name="tradecore",
    help="Event-sourced trading core for Japanese equities.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command(help="Run a seeded trading session on real TOPIX names and check every invariant.")(
    demo
)
app.add_typer(account_app, name="account")
app.add_typer(order_app, name="order")
app.add_typer(market_app, name="market")
app.command(help="The audit trail of one aggregate.")(events)
app.command(help="Serve the HTTP API with the saga, matching and projection stages.")(serve)
app.command(help="Run one stage of the order flow (saga, matching, projections) alone.")(worker)
app.add_typer(db_app, name="db")
app.add_typer(projections_app, name="projections")
app.add_typer(auth.app, name="auth", help="Issue tokens and rotate signing keys.")
app.add_typer(model.app, name="model", help="Train, evaluate and serve the ATFT-GAT-FAN model.")


def main() -> None:
    app()
