"""Request limits that hold against hostile clients, as plain ASGI middleware.

They run before any route code, so an upload that breaks a rule costs the server almost nothing:
no multipart parsing, no decoding, no queueing behind real work.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """The request body passed the byte limit while it was being received."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body is over the limit of {limit} bytes")


async def send_json(send: Send, status: int, body: dict, headers: dict[str, str] | None = None):
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """Refuse bodies over ``max_body_bytes`` with 413, counting bytes as they arrive.

    A Content-Length over the limit is refused before reading anything. A chunked upload has no
    Content-Length (and a client may lie in one), so ``receive`` is wrapped too: the moment the
    running total passes the limit it raises `BodyTooLarge`, which becomes a 413 here if the
    route has not started answering yet. The server never holds more than the limit plus one
    chunk of any request.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_json(send, 400, {"error": "invalid Content-Length header"})
                    return
                if declared > limit:
                    await send_json(send, 413, {"error": str(BodyTooLarge(limit))})
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as err:
            if started:
                raise
            await send_json(send, 413, {"error": str(err)})


class AdmissionMiddleware:
    """Bearer-token check and a cap on concurrent scoring requests, before the body is read.

    Over the cap the answer is 503 with Retry-After at once: a client retries later instead of
    every request waiting in an unbounded queue until the server runs out of memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        protected_prefix: str,
        limited_paths: Collection[str],
        max_concurrency: int,
        retry_after_s: int = 1,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.protected_prefix = protected_prefix
        self.limited_paths = frozenset(limited_paths)
        self.max_concurrency = max_concurrency
        self.retry_after_s = retry_after_s
        self.in_flight = 0

    def _authorised(self, scope: Scope) -> bool:
        supplied = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    supplied = credentials.strip()
        # Constant time, so response timing does not reveal how much of a guess was right.
        return hmac.compare_digest(supplied, self.token or b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.token and path.startswith(self.protected_prefix) and not self._authorised(scope):
            await send_json(
                send,
                401,
                {"error": "missing or invalid bearer token"},
                {"www-authenticate": "Bearer"},
            )
            return
        if path not in self.limited_paths:
            await self.app(scope, receive, send)
            return
        # No await between the check and the increment: one event loop, so this is atomic.
        if self.in_flight >= self.max_concurrency:
            await send_json(
                send,
                503,
                {"error": f"server busy: {self.max_concurrency} requests in progress, retry later"},
                {"retry-after": str(self.retry_after_s)},
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
