"""A test-only HTTP fault injector to put between a client and a real server.

This is NOT an S3 implementation: it forwards each request byte-for-byte to
the real upstream (e.g. ``S3Server``) and relays the answer. Its only job is
to run an action (typically ``s3_server.stop``) just before forwarding the
first request that matches a rule, so a test can make an outage strike at an
exact point of a client's conversation, e.g. right at ``PUT .../latest.json``.

Headers, ``Host`` included, are forwarded unchanged, so SigV4 signatures made
for the proxy's address stay valid upstream (the client signs the Host it
talks to, and the server checks the Host it receives). When the upstream
cannot be reached, the proxy closes the client connection without an answer,
like a dead server would.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from tests.helpers.serving_thread import ServingThread

Predicate = Callable[[str, str, Mapping[str, str]], bool]
"""``(method, path_with_query, headers) -> bool``"""
Action = Callable[[], object]
Rule = tuple[Predicate, Action]

# Hop-by-hop framing the proxy redoes itself (bodies are buffered both ways).
_REFRAMED = {"transfer-encoding", "connection", "keep-alive"}


def on(method: str, path_suffix: str) -> Predicate:
    """Predicate helper: ``method`` matches and the path (query stripped) ends with ``path_suffix``."""

    def predicate(m: str, path: str, headers: Mapping[str, str]) -> bool:
        return m == method and path.split("?", 1)[0].endswith(path_suffix)

    return predicate


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    faulted: bool  # a rule's action ran just before this request was forwarded
    forwarded: bool  # upstream answered (False: the client connection was dropped)


class FaultProxy:
    """Fault-injecting pass-through HTTP proxy for tests (see the module docstring).

    Each rule fires once, on the first request it matches; ``seen`` lists every
    request (method, path) in arrival order so tests can assert where the
    fault struck.
    """

    def __init__(
        self,
        upstream_url: str,
        rules: Sequence[Rule] = (),
        host: str = "127.0.0.1",
        upstream_timeout: float = 30.0,
    ) -> None:
        upstream = urlsplit(upstream_url)
        if upstream.scheme != "http" or not upstream.hostname:
            raise ValueError(f"only plain http upstreams are supported: {upstream_url}")
        self.upstream_host = upstream.hostname
        self.upstream_port = upstream.port or 80
        self.upstream_timeout = upstream_timeout
        self.host = host
        self._rules: list[Rule | None] = list(rules)
        self._lock = threading.Lock()
        self._seen: list[SeenRequest] = []
        self._serving: ServingThread | None = None
        self.endpoint_url = ""

    # -- API for tests ---------------------------------------------------
    def add_rule(self, predicate: Predicate, action: Action) -> None:
        with self._lock:
            self._rules.append((predicate, action))

    @property
    def seen(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._seen)

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request received, in order."""
        return [(r.method, r.path) for r in self.seen]

    def start(self) -> None:
        if self._serving is not None:
            return
        server = ThreadingHTTPServer((self.host, 0), self._handler_class())
        server.daemon_threads = True
        self.endpoint_url = f"http://{self.host}:{server.server_address[1]}"
        self._serving = ServingThread(server, "fault-proxy")

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop(timeout=5)

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------
    def _take_action(self, method: str, path: str, headers: Mapping[str, str]) -> Action | None:
        """The action of the first unfired rule matching this request, marking it fired."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule is not None and rule[0](method, path, headers):
                    self._rules[index] = None
                    return rule[1]
        return None

    def _record(self, request: SeenRequest) -> None:
        with self._lock:
            self._seen.append(request)

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream unchanged; raise OSError/HTTPException if unreachable."""
        conn = http.client.HTTPConnection(
            self.upstream_host, self.upstream_port, timeout=self.upstream_timeout
        )
        try:
            # skip_host / skip_accept_encoding: send exactly the client's headers.
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body if body else None)
            response = conn.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            conn.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and answers Expect: 100-continue

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _proxy(self) -> None:
                method, path = self.command, self.path
                body = self._read_body()
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _REFRAMED]
                if self.headers.get("Transfer-Encoding") and "Content-Length" not in self.headers:
                    headers.append(("Content-Length", str(len(body))))
                action = proxy._take_action(method, path, dict(self.headers.items()))
                if action is not None:
                    action()
                try:
                    status, reason, up_headers, payload = proxy._forward(
                        method, path, headers, body
                    )
                except (OSError, http.client.HTTPException):
                    proxy._record(SeenRequest(method, path, action is not None, False))
                    self.close_connection = True  # hang up without an answer, like a dead server
                    return
                proxy._record(SeenRequest(method, path, action is not None, True))
                self.send_response_only(status, reason)
                for name, value in up_headers:
                    if name.lower() not in _REFRAMED:
                        self.send_header(name, value)
                if not any(header[0].lower() == "content-length" for header in up_headers):
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _proxy

            def log_message(self, format: str, *args: object) -> None:
                pass  # `seen` is the record; keep test output quiet

        return Handler
