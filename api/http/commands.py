"""Command routes: accounts, cash, orders, halts. Each answers with the event position.

A refused command raises a domain error before anything is stored; the problem handlers
turn it into problem+json naming the field and the rule (404 unknown ids, 409
conflicts, 422 rule and risk refusals). Permission is checked against the write model's
own record of the order or account, never the (possibly lagging) read model.
"""

# No `from __future__ import annotations`: FastAPI must see the route-local aliases.
import asyncio
from collections.abc import Callable
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Response

from aggregates.application import OrderRequest, TradingApplication
from aggregates.base import Meta
from aggregates.errors import RuleViolation
from api.http.deps import Context, no_order
from api.http.json_body import JSONRoute
from api.http.models import (
    Accepted,
    AmendOrder,
    CashMovement,
    CloseSession,
    Halt,
    OpenAccount,
    PlaceOrder,
    SymbolPath,
)
from api.problems import PROBLEM_RESPONSES
from api.security import Principal, Role, require_role, require_trade

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
    description="Client order id when the body has none; a retry with the same key and "
                "terms returns the same order (200) instead of placing another.")]


def router(context: Context) -> APIRouter:
    api = APIRouter(prefix="/v1", tags=["commands"], responses=PROBLEM_RESPONSES,
                    route_class=JSONRoute)
    caller = Annotated[Principal, Depends(context.caller)]

    def meta(principal: Principal) -> Meta:
        return Meta.command(principal.subject)

    async def perform(principal: Principal, roles: tuple[Role, ...],
                      command: Callable[[TradingApplication, Meta], Any], status: str,
                      account_id: UUID | None = None) -> Accepted:
        """A role-gated command, run off the event loop (it blocks on the store)."""
        require_role(principal, *roles)
        app = context.rt.app
        result = await asyncio.to_thread(command, app, meta(principal))
        return Accepted(position=app.log_position, status=status,
                        account_id=account_id or result)

    admin, desk_risk = (Role.admin,), (Role.risk, Role.admin)

    # -- accounts and cash -------------------------------------------------------------
    @api.post("/accounts", status_code=201, response_model=Accepted)
    async def open_account(body: OpenAccount, principal: caller) -> Accepted:
        """Open a cash account (admin)."""
        return await perform(principal, admin, lambda app, m: app.open_account(
            body.name, owner=body.owner, allow_short=body.allow_short, meta=m), "open")

    @api.post("/accounts/{account_id}/deposits", status_code=201, response_model=Accepted)
    async def deposit(account_id: UUID, body: CashMovement, principal: caller) -> Accepted:
        """Credit yen to an account (admin)."""
        return await perform(principal, admin, lambda app, m: app.deposit(
            account_id, body.amount, m), "deposited", account_id)

    @api.post("/accounts/{account_id}/withdrawals", status_code=201, response_model=Accepted)
    async def withdraw(account_id: UUID, body: CashMovement, principal: caller) -> Accepted:
        """Debit yen from an account's available cash (admin)."""
        return await perform(principal, admin, lambda app, m: app.withdraw(
            account_id, body.amount, m), "withdrawn", account_id)

    # -- risk switches -----------------------------------------------------------------
    @api.post("/accounts/{account_id}/halt", status_code=202, response_model=Accepted)
    async def halt_account(account_id: UUID, body: Halt, principal: caller) -> Accepted:
        """Stop new orders for an account (risk, admin)."""
        return await perform(principal, desk_risk, lambda app, m: app.halt_account(
            account_id, body.reason, m), "halted", account_id)

    @api.post("/accounts/{account_id}/resume", status_code=202, response_model=Accepted)
    async def resume_account(account_id: UUID, principal: caller) -> Accepted:
        """Allow orders for a halted account again (risk, admin)."""
        return await perform(principal, desk_risk, lambda app, m: app.resume_account(
            account_id, m), "trading", account_id)

    @api.post("/symbols/{symbol}/halt", status_code=202, response_model=Accepted)
    async def halt_symbol(symbol: SymbolPath, body: Halt, principal: caller) -> Accepted:
        """Stop trading in a symbol (risk, admin)."""
        return await perform(principal, desk_risk, lambda app, m: app.halt_symbol(
            symbol, body.reason, m), "halted")

    @api.post("/symbols/{symbol}/resume", status_code=202, response_model=Accepted)
    async def resume_symbol(symbol: SymbolPath, principal: caller) -> Accepted:
        """Resume trading in a symbol (risk, admin)."""
        return await perform(principal, desk_risk, lambda app, m: app.resume_symbol(
            symbol, m), "trading")

    @api.post("/session/close", status_code=202, response_model=Accepted)
    async def close_session(body: CloseSession, principal: caller) -> Accepted:
        """End the trading day: resting DAY orders expire (risk, admin)."""
        return await perform(principal, desk_risk, lambda app, m: app.close_session(
            body.session_date, m), "closed")

    # -- orders ------------------------------------------------------------------------
    @api.post("/orders", status_code=201, response_model=Accepted,
              responses={200: {"model": Accepted,
                               "description": "The same order again (idempotent retry)"}})
    async def place_order(body: PlaceOrder, principal: caller, response: Response,
                          idempotency_key: IdempotencyKey = None) -> Accepted:
        """Place an order (trader on the account, admin). 201 new, 200 idempotent retry."""
        require_trade(principal, body.account_id)
        client_order_id = body.client_order_id or idempotency_key
        if client_order_id is None:
            raise RuleViolation("client_order_id", "given in the body or as Idempotency-Key",
                                None)
        if idempotency_key is not None and idempotency_key != client_order_id:
            raise RuleViolation("Idempotency-Key", "equals client_order_id when both are given",
                                idempotency_key)
        runtime = context.rt
        placement = await runtime.intake.place(OrderRequest(
            account_id=body.account_id, client_order_id=client_order_id, symbol=body.symbol,
            side=body.side, quantity=body.quantity, price=body.price,
            order_type=body.order_type, tif=body.tif, meta=meta(principal)))
        if not placement.created:
            response.status_code = 200
        # Answered once the order and its reservation are stored: matching and
        # settlement follow on the stages; fills reach the client on /v1/stream and the
        # queries (min_position = this position gives read-your-writes).
        status = "placed" if placement.created else (
            await asyncio.to_thread(runtime.app.get_order, placement.order_id)).status.value
        return Accepted(position=placement.position or runtime.app.log_position,
                        status=status, order_id=placement.order_id,
                        account_id=body.account_id, created=placement.created)

    def tradeable_order(principal: Principal, order_id: UUID) -> None:
        app = context.rt.app
        order = app.get_order(order_id)  # NotFound for an unknown id
        if not principal.can_see(order.account_id):
            raise no_order(order_id)  # another account's: the same answer, no oracle
        require_trade(principal, order.account_id)

    @api.patch("/orders/{order_id}", status_code=202, response_model=Accepted)
    async def amend_order(order_id: UUID, body: AmendOrder, principal: caller) -> Accepted:
        """Ask for a new total quantity and/or price (trader on the account, admin)."""
        app = context.rt.app

        def amend() -> str:
            tradeable_order(principal, order_id)
            app.amend_order(order_id, quantity=body.quantity, price=body.price,
                            meta=meta(principal))
            return app.get_order(order_id).status.value

        status = await asyncio.to_thread(amend)
        return Accepted(position=app.log_position, status=status, order_id=order_id)

    @api.delete("/orders/{order_id}", status_code=202, response_model=Accepted)
    async def cancel_order(order_id: UUID, principal: caller) -> Accepted:
        """Cancel what is left of an order (trader on the account, admin)."""
        app = context.rt.app

        def cancel() -> str:
            tradeable_order(principal, order_id)
            app.cancel_order(order_id, meta(principal))
            return app.get_order(order_id).status.value

        status = await asyncio.to_thread(cancel)
        return Accepted(position=app.log_position, status=status, order_id=order_id)

    return api
