"""What every route shares: the runtime, the caller, and read-your-writes waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated
from uuid import UUID

from fastapi import HTTPException, Query
from starlette.requests import HTTPConnection

from aggregates.errors import NotFound, RuleViolation
from api.gate import client_address
from api.limits import FailedAuthLimit, RateLimiter, rate_limited
from api.runtime import Runtime
from api.security import KeyRing, Principal
from infra.settings import Settings
from projections.queries import ReadModels


@dataclass
class Context:
    settings: Settings
    limiter: RateLimiter
    authenticate: Callable[..., Awaitable[Principal]]
    keyring: KeyRing
    failures: FailedAuthLimit
    runtime: Runtime | None = None
    caller: Callable[..., Awaitable[Principal]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # The dependency every route takes: authenticates, then counts the request.
        self.caller = rate_limited(self.authenticate, self.limiter)

    def refused_for(self, connection: HTTPConnection) -> int | None:
        """Seconds the caller's address stays refused for failing authentication."""
        return self.failures.refused_for(client_address(connection.scope))

    def refused(self, connection: HTTPConnection) -> int | None:
        """Count a failed authentication against the caller's address (WebSocket); the
        seconds the address is now refused for, when that was one failure too many."""
        return self.failures.failed(client_address(connection.scope))

    @property
    def rt(self) -> Runtime:
        assert self.runtime is not None, "the app's lifespan has not started"
        return self.runtime

    def reader(self) -> Callable[..., Awaitable[ReadModels]]:
        """A dependency giving read models that include ``min_position`` (read-your-writes)."""
        context = self

        async def read_models(
            min_position: Annotated[int | None, Query(
                ge=0, le=2**62,
                description="Wait until the read models include this event position "
                            "(from a command's response).")] = None,
        ) -> ReadModels:
            runtime = context.rt
            if min_position is not None and min_position > runtime.projected:
                head = runtime.head()
                if min_position > head:
                    raise RuleViolation("min_position", "not beyond the event log's head",
                                        min_position, f"the event log ends at {head}")
                reached = await asyncio.to_thread(runtime.wait_for, min_position,
                                                  context.settings.read_wait_timeout_s)
                if not reached:
                    raise HTTPException(503, f"read models have not reached position "
                                             f"{min_position} yet; retry",
                                        headers={"Retry-After": "1"})
            return runtime.read_models()

        return read_models


def no_order(order_id: UUID) -> NotFound:
    """What an order id the caller may not see gets: exactly what an unknown id gets, so
    ids (which derive from account and client order id) cannot be tested for existence."""
    return NotFound("order_id", "exists", str(order_id), f"no order {order_id}")


def no_account(account_id: UUID) -> NotFound:
    """What an account id the caller may not see gets: exactly what an unknown id gets
    (account ids derive from names, so a 403 would confirm a guessed name)."""
    return NotFound("account_id", "exists", str(account_id), f"no account {account_id}")


def account_scope(principal: Principal) -> set[str] | None:
    """Accounts a caller may see, as read-model keys (None: every account)."""
    if principal.accounts is None:
        return None
    return {str(a) for a in principal.accounts}

