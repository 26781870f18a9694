"""A loopback TCP proxy that a test can cut: the outage test's fallback when the session
Keycloak cannot be stopped for real (a server reused from the environment)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from tests.support.smtp import free_port


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; :meth:`cut` refuses and drops connections
    (as a stopped server would), :meth:`restore` accepts again on the same port. ``latency``
    delays each chunk sent upstream (a slow network: every request takes that much longer)."""

    def __init__(self, target_host: str, target_port: int, latency: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.latency = latency
        self.port = free_port()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        """Listen (again)."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and drop every open connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for a, b, delay in ((client, upstream, self.latency), (upstream, client, 0.0)):
                threading.Thread(target=self._pump, args=(a, b, delay), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float = 0.0) -> None:
        try:
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
