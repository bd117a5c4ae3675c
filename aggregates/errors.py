"""Domain errors: each names the field, the rule and the offending value.

A command that raises one of these stored nothing. ``category`` lets adapters (HTTP,
CLI) map errors without knowing every class: ``invalid`` (a rule on the input),
``not_found``, ``conflict`` (state or duplicate), ``rejected`` (risk: funds, shares,
limits, halts).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(ValueError):
    category: ClassVar[str] = "invalid"

    def __init__(self, field: str, rule: str, value: Any, message: str | None = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        self.message = message or f"{field}={value!r} breaks rule '{rule}'"
        super().__init__(self.message)


class RuleViolation(DomainError):
    """The input itself is wrong (lot, tick, limits, sign, enum)."""


class RiskRejection(DomainError):
    """Pre-trade risk said no (funds, shares, notional, fat finger, halts)."""

    category = "rejected"


class NotFound(DomainError):
    category = "not_found"


class Conflict(DomainError):
    """The command clashes with what already happened (duplicate, illegal transition)."""

    category = "conflict"


class IllegalTransition(Conflict):
    def __init__(self, aggregate: str, status: str, action: str) -> None:
        super().__init__(
            field="status",
            rule="legal transition",
            value=status,
            message=f"cannot {action} {aggregate} in status '{status}'",
        )
        self.action = action
