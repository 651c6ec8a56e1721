"""A loopback HTTP server for a folder, so the demo exercises img2dataset's real network path.

The standard library's ``http.server`` does the serving (and refuses paths that
climb out of the folder); this module only binds it to 127.0.0.1 on a free
port, runs it in a thread for the duration of a ``with`` block, and counts the
requests so callers can check what was (re)fetched.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files; records each request instead of printing it."""

    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        pass

    def log_request(self, code="-", size="-"):
        with self.server.lock:
            self.server.requests[int(code) if str(code).isdigit() else 0] += 1
            self.server.paths.append(self.path)


class LoopbackServer:
    """``with LoopbackServer(root) as server: server.base_url`` -> ``http://127.0.0.1:PORT/``."""

    def __init__(self, root: str | Path, port: int = 0):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"loopback root {self.root} is not a directory")
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self._server.lock = threading.Lock()
        self._server.requests = Counter()
        self._server.paths = []
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-http", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def status_counts(self) -> dict[int, int]:
        with self._server.lock:
            return dict(self._server.requests)

    @property
    def paths(self) -> list[str]:
        with self._server.lock:
            return list(self._server.paths)

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
