"""How a command refuses bad input: one line naming the field and the rule, exit 2.

Commands that open a store do it through :func:`refusing`, so a domain error raised
while opening it or while using it ends the same way and the store is always closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, Protocol, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from aggregates.errors import DomainError

console = Console()


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def refused(err: DomainError) -> NoReturn:
    console.print(Text.assemble(("refused", "red"), f": {err.message} (field={err.field}, "
                                                    f"rule={err.rule})"), highlight=False)
    raise typer.Exit(2) from None


@contextmanager
def refusing(open_: Callable[[], C]) -> Iterator[C]:
    """What ``open_`` opens, closed at the end; a domain error refuses the command."""
    try:
        opened = open_()
    except DomainError as err:
        refused(err)
    try:
        yield opened
    except DomainError as err:
        refused(err)
    finally:
        opened.close()
