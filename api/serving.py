"""How `tradecore serve` runs uvicorn: the connection limits and timeouts.

uvicorn closes an *idle* keep-alive connection (``timeout_keep_alive``) but puts no
limit on how long a request may take to arrive: a client that sends its headers one
byte every few seconds (slowloris), or declares a body and trickles it, holds a
connection, a parser and (for the body) a running request for as long as it likes;
1,000 of each stayed open for 20 s and more. :class:`GuardedHTTPProtocol` adds:

* a **header timeout**: the request line and headers must arrive within
  ``api_header_timeout_s`` of the connection opening or of the previous response
  (408 problem+json, then closed);
* a **body timeout**: the body must arrive within ``api_body_timeout_s`` of the headers
  (408 if no response was started, then closed);
* a **header size cap**: more than ``api_max_header_bytes`` before the headers end is
  431, then closed (httptools itself has no limit; h11's
  ``h11_max_incomplete_event_size`` is set to the same figure).

With uvicorn's own ``timeout_keep_alive`` (``api_keep_alive_s``) and
``limit_concurrency`` (``api_max_connections``: beyond that many open connections or
running requests a request is answered 503), every connection has a bounded life.
``docs/operations.md`` lists the settings. WebSockets leave this protocol at the upgrade
and are bounded by uvicorn's ping timeout and the stream's own rules.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problem_details import MEDIA_TYPE, problem_document
from infra.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """What :class:`GuardedHTTPProtocol` enforces; carried on uvicorn's config (so it
    travels to ``--workers`` processes with it)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16384

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            settings.api_header_timeout_s,
            settings.api_body_timeout_s,
            settings.api_max_header_bytes,
        )


def _response(status: int, phrase: str, detail: str, field: str, rule: str) -> bytes:
    body = json.dumps(problem_document(status, phrase, detail, field=field, rule=rule)).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: {MEDIA_TYPE}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body timeouts and a header size cap."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = getattr(config, "tradecore_limits", None) or (
            ConnectionLimits()
        )
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False
        self._in_body = False  # headers done, body not yet complete
        self._head_after_body = False  # answered early: the next head follows this body

    # -- the phases of a request -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def _await_head(self) -> None:
        self._cancel_head()
        self._in_head, self._head_bytes = True, 0
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            limit = self.limits.max_header_bytes
            self._refuse(
                _response(
                    431,
                    "Request Header Fields Too Large",
                    f"the request line and headers are longer than {limit} bytes",
                    "headers",
                    f"at most {limit} bytes",
                )
            )

    def on_headers_complete(self) -> None:
        self._cancel_head()
        self._in_head, self._in_body = False, True
        super().on_headers_complete()
        if self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)

    def on_message_complete(self) -> None:
        self._cancel_body()
        self._in_body = False
        super().on_message_complete()
        if self._head_after_body:
            self._head_after_body = False
            self._await_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self.pipeline:
            return
        if self._in_body:  # answered before the body was read: it still has to arrive
            self._head_after_body = True
        else:
            self._await_head()  # the next request on this connection, if any

    def handle_websocket_upgrade(self) -> None:
        self._cancel_head()
        self._cancel_body()
        self._in_head = False
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head()
        self._cancel_body()
        super().connection_lost(exc)

    # -- timers ------------------------------------------------------------------------
    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_bytes == 0:
            self._close()  # an idle connection: nothing to answer
            return
        seconds = self.limits.header_timeout_s
        self._refuse(
            _response(
                408,
                "Request Timeout",
                f"the request headers did not arrive within {seconds:g} s",
                "headers",
                f"complete within {seconds:g} s",
            )
        )

    def _body_late(self) -> None:
        self._body_timer = None
        if self.cycle is not None and self.cycle.response_complete:
            self._close()  # already answered; the rest of the body never came
            return
        seconds = self.limits.body_timeout_s
        self._refuse(
            _response(
                408,
                "Request Timeout",
                f"the request body did not arrive within {seconds:g} s",
                "body",
                f"complete within {seconds:g} s",
            )
        )

    def _refuse(self, response: bytes) -> None:
        """Answer (unless a response is already under way) and close the connection."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(response)  # no response under way: answer this one
        if cycle is not None and not cycle.response_complete:
            # the request in progress sees a disconnect and whatever it sends is dropped
            cycle.disconnected = True
            cycle.message_event.set()
        self._close()

    def _close(self) -> None:
        self._cancel_head()
        self._cancel_body()
        if not self.transport.is_closing():
            self.transport.close()


def server_config(
    settings: Settings, app: Any, *, host: str, port: int, **options: Any
) -> uvicorn.Config:
    """The uvicorn configuration `tradecore serve` (and the tests' live server) use."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=GuardedHTTPProtocol,
        timeout_keep_alive=settings.api_keep_alive_s,
        limit_concurrency=settings.api_max_connections,
        h11_max_incomplete_event_size=settings.api_max_header_bytes,
        forwarded_allow_ips=settings.api_trusted_proxies,
        **options,
    )
    config.tradecore_limits = ConnectionLimits.from_settings(settings)  # type: ignore[attr-defined]
    return config
