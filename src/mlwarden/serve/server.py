"""How `mlwarden serve` listens: uvicorn on a socket bound before the server starts (a port in use is a
one-line error and exit 2, not uvicorn's exit 1), with deadlines on what uvicorn leaves open.

uvicorn (0.49) arms no timer before a request's headers are complete: its keep-alive timer starts only after a
response and is cancelled by any byte received, so a connection that sends a partial header, or one byte now
and then, stays open forever (300 of them hold 300 sockets and their memory). `DeadlineProtocol` gives every
connection `header_timeout_s` to deliver a request's headers (from its opening, or from the end of the previous
response), at most `MAX_HEADER_BYTES` of them, and closes a connection whose client stops reading its answer
for as long. The body has its own deadline, `body_timeout_s`, in the Gate (app.py: a 408)."""
from __future__ import annotations

import errno
import json
import socket

from ..core.errors import UserError

MAX_HEADER_BYTES = 64 * 1024


def _response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n\r\n").encode() + body


def deadline_protocol(header_timeout_s: float, max_header_bytes: int = MAX_HEADER_BYTES):
    """uvicorn's HTTP protocol class (httptools where installed, else h11) with the deadlines above."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class DeadlineProtocol(AutoHTTPProtocol):
        def connection_made(self, transport):
            self._deadline, self._header_bytes, self._stalled = None, 0, False
            super().connection_made(transport)
            self._arm()

        def _busy(self) -> bool:
            """A request's headers have arrived and its response is not complete (the Gate times its body)."""
            return self.cycle is not None and not self.cycle.response_complete

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout_s, self._expire)

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._busy():
                stalled = self.flow.write_paused   # the client is not reading its answer
                if stalled and self._stalled:
                    self.transport.close()
                    return
                self._stalled = stalled
                self._arm()
                return
            if self._header_bytes:
                self.transport.write(_response(408, "Request Timeout", f"the request headers took longer than "
                                                                       f"{header_timeout_s:g} s to arrive"))
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            waiting = not self._busy()
            super().data_received(data)
            if self._busy() or self.transport.is_closing():
                self._header_bytes = 0
            elif waiting:
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes:
                    self.transport.write(_response(431, "Request Header Fields Too Large",
                                                   f"request headers exceed {max_header_bytes} bytes"))
                    self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._header_bytes, self._stalled = 0, False
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return DeadlineProtocol


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UserError naming why not (port in use, unknown host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: cannot listen there ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # not another listener: TIME_WAIT only
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                        + (" (another process holds the port; choose another with --port)"
                           if e.errno == errno.EADDRINUSE else "")) from None
    sock.set_inheritable(True)
    return sock


def server(app, sock: socket.socket, header_timeout_s: float, log_level: str = "warning"):
    """The uvicorn.Server for `app` on `sock` (its .run(sockets=[sock]) serves until stopped)."""
    import uvicorn
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, ws="none",
                            http=deadline_protocol(header_timeout_s))
    return uvicorn.Server(config)
