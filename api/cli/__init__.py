"""The ``tradecore`` command line."""

from __future__ import annotations

import typer

from api.cli import model

app = typer.Typer(
    name="tradecore",
    help="Event-sourced trading core for Japanese equities.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(model.app, name="model", help="Train, evaluate and serve the ATFT-GAT-FAN model.")


def main() -> None:
    app()
