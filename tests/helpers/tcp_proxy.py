"""A TCP pass-through to an API server that tests can cut: the server going away, for fault tests.

TLS stays end to end (the proxy never sees a request), so clients verify the real server's
certificate; point a kubeconfig at ``https://127.0.0.1:<port>`` (the lab's certificates name
127.0.0.1). With ``kubeconfig_through`` a copy of a kubeconfig is written that goes through it.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import yaml


class TcpProxy:
    """Forwards TCP to the API server untouched (TLS end to end). ``cut()`` is the server going away:
    open connections are dropped and new ones refused; ``start()`` brings it back on the same port.

    With ``cut_after`` set, it cuts by itself once clients have sent that many bytes: a point in
    the client's conversation that does not depend on how fast this machine is.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.cut_after: int | None = None
        self.sent = 0  # bytes from clients to the server
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            server.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            for source, target, upward in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(source, target, upward), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, upward: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if upward:
                    with self._lock:
                        self.sent += len(data)
                        due = self.cut_after is not None and self.sent >= self.cut_after
                    if due:
                        self.cut()
                        break
                target.sendall(data)
        except OSError:
            pass
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.cut_after = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def kubeconfig_through(self, kubeconfig: Path, dest: Path) -> Path:
        """A copy of ``kubeconfig`` (0600) whose clusters are reached through this proxy."""
        config = yaml.safe_load(kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = "https://127.0.0.1:%d" % self.port
        dest.write_text(yaml.safe_dump(config))
        dest.chmod(0o600)
        return dest


def proxy_to(server_url: str) -> TcpProxy:
    """A started proxy to the API server at ``server_url``."""
    server = urlsplit(server_url)
    proxy = TcpProxy((server.hostname or "127.0.0.1", server.port or 443))
    proxy.start()
    return proxy
