"""Request-body limits enforced on the body stream, in bytes and in time, not only on the Content-Length header.

Why both: a client may lie in Content-Length, or send no length at all (chunked transfer
encoding), so checking the header alone lets an arbitrarily large body through. This ASGI
middleware rejects a declared length over the limit before reading anything, and otherwise counts
the bytes as the application reads them: the moment the count passes the limit it stops reading
and answers 413, whatever the application was about to say.

Why a time limit too: a chunk declared as 0xfffffffffffffff bytes long, or a body trickled a byte
a minute, never passes the byte limit and never ends, so the request (and the worker slot reading
it) would hang for ever. The whole body must arrive within `timeout_s` of the request's start;
past that the read is abandoned and the client gets 408.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyRefused(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class BodySizeLimit:
    """Answer 413 to HTTP requests whose body exceeds `max_bytes`, 408 to those whose body takes over `timeout_s`."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.timeout_s = float(timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(send, 413)
            return
        deadline = time.monotonic() + self.timeout_s
        seen = 0
        refused: int | None = None
        body_done = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, refused, body_done
            if body_done:  # the body is in: later reads wait for a disconnect, which may rightly take long
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                refused = 408
                raise _BodyRefused(408) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if seen > self.max_bytes:
                    refused = 413
                    raise _BodyRefused(413)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None:  # the app caught the error and answered something else: the refusal wins
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyRefused:
            pass
        except Exception:
            if refused is None:
                raise
        if refused is not None and not started:
            await self._reject(send, refused)

    async def _reject(self, send: Send, status: int) -> None:
        detail = (f"request body is larger than the {self.max_bytes:,}-byte limit" if status == 413 else
                  f"request body not received within {self.timeout_s:g} s")
        body = json.dumps({"detail": detail}).encode()
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close")],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
