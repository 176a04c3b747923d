"""An ``http.server`` serving requests from a daemon thread, for the in-process test servers."""

from __future__ import annotations

import socketserver
import threading


class ServingThread:
    """Starts ``server.serve_forever`` in a thread at once; ``stop`` shuts it down and waits for the thread."""

    def __init__(self, server: socketserver.BaseServer, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=timeout)
