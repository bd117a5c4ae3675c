"""Free text the write model stores (halt reasons, account names and owners).

Stored text is read back by people: in the audit trail (`tradecore events`), in
terminals and in browsers. A NUL or an escape sequence there can hide or rewrite what
an operator sees (``\\x1b[2K`` erases a line; a right-to-left override reorders one),
so free text must be printable: no C0/C1 control characters, no line or paragraph
separators, no bidirectional embedding, override or isolate controls, no lone
surrogates.
"""

from __future__ import annotations

import re

from aggregates.errors import RuleViolation

NO_CONTROL_CHARACTERS = "no control characters"
"""The rule a refused text breaks (the same words over HTTP and on the command line)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def first_control_character(text: str) -> int | None:
    """Index of the first character free text may not hold, or None."""
    found = _CONTROL.search(text)
    return None if found is None else found.start()


def printable(field: str, text: str) -> str:
    """``text`` when it holds no control character; else :class:`RuleViolation` naming
    ``field``, the rule and where the first one is."""
    at = first_control_character(text) if isinstance(text, str) else None
    if at is not None:
        raise RuleViolation(
            field,
            NO_CONTROL_CHARACTERS,
            text,
            f"{field} holds control character U+{ord(text[at]):04X} at "
            f"position {at}; rule '{NO_CONTROL_CHARACTERS}'",
        )
    return text
