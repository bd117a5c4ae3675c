"""``GET /v1/audit/{aggregate_id}``: an aggregate's state as of a time or version, rebuilt
from the event store (not from a read model), with its full history.

Who may ask: risk and admin for anything; a trader for the orders, positions and
account of the accounts its token covers. Another role is refused (403) for the
accounts it covers; an aggregate of an account the token does not cover (or of none:
the market, a venue) is answered like an unknown id (404, the same body), as every
route that takes an id does, so a token cannot probe which ids exist.
"""

# No `from __future__ import annotations`: FastAPI must see the route-local aliases.
import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from api import audit
from api.http.deps import Context
from api.problems import PROBLEM_RESPONSES
from api.roles import DESK_WIDE_ROLES, Role
from api.security import Principal, require_role


class AuditEntry(BaseModel):
    """One event: type, version, who, under which command, in which flow, caused by
    what, when (UTC, microseconds), and its own fields."""

    event: str = Field(examples=["Order.Placed"])
    aggregate_id: str
    version: int
    principal: str | None
    command_id: str | None
    correlation_id: str | None
    causation_id: str | None
    timestamp: str = Field(examples=["2026-11-20T00:01:02.000000Z"])
    fields: dict[str, Any]


class AuditView(BaseModel):
    """The aggregate at the point asked (its newest version by default) and its history."""

    aggregate_id: str
    kind: str = Field(examples=["account"])
    as_of: str | None
    version: int
    last_version: int
    rebuilt_from_snapshot: int | None
    account_id: str | None
    state: dict[str, Any]
    history: list[AuditEntry]


def router(context: Context) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["audit"], responses=PROBLEM_RESPONSES)
    caller = Annotated[Principal, Depends(context.caller)]

    @api.get("/audit/{aggregate_id}", response_model=AuditView)
    async def audit_show(
        aggregate_id: UUID, principal: caller,
        as_of: Annotated[str | None, Query(
            max_length=64, description="A moment with its offset (…Z or +09:00): the state "
                                       "after the last event recorded at or before it.")
        ] = None,
        version: Annotated[int | None, Query(
            ge=1, le=2**62, description="The state after this version (1: creation).")
        ] = None,
    ) -> AuditView:
        """State of an order, account or position as of a time or version, rebuilt by
        replay of the event store, with every event's principal, command id,
        correlation and causation ids and UTC timestamp. Risk and admin may read any
        aggregate; a trader those of the accounts its token covers; an aggregate of an
        account the token does not cover is answered as an unknown id (404), so no
        token can probe which ids exist."""
        moment = audit.parse_time(as_of) if as_of is not None else None
        app = context.rt.app

        def read() -> dict[str, Any]:
            found = audit.state_at(app, aggregate_id, as_of=moment, version=version)
            if principal.role not in DESK_WIDE_ROLES:
                if found.account_id is None or not principal.can_see(found.account_id):
                    raise audit.unknown(aggregate_id)
                require_role(principal, Role.trader, Role.risk, Role.admin)
            return audit.show(app, aggregate_id, as_of=moment, found=found)

        return AuditView.model_validate(await asyncio.to_thread(read))

    return api
