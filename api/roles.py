"""What a bearer token can claim: the four roles and the longest lifetime.

Apart from :mod:`api.security` (PyJWT, key files) so that the command line can list the
roles in its help without importing either.
"""

from __future__ import annotations

from enum import StrEnum

MAX_TTL_S = 30 * 24 * 3600
"""Longest lifetime a token may be issued with: rotation waits for the oldest token."""


class Role(StrEnum):
    trader = "trader"
    viewer = "viewer"
    risk = "risk"
    admin = "admin"


DESK_WIDE_ROLES = frozenset({Role.risk, Role.admin})
"""Roles whose tokens cover every account (and so carry ``accounts: "*"``)."""
