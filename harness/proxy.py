"""A TCP proxy on 127.0.0.1 that the harness puts in front of Redis and
PostgreSQL, so a scenario can make a backend unreachable without touching
the server itself.

Modes:

- ``pass``: bytes flow both ways.
- ``drop``: every open connection is reset (RST) and every new one is
  accepted and reset at once: the client sees "connection reset" right away,
  like a server whose host went away and came back without it.
- ``blackhole``: connections are accepted (the kernel completes the
  handshake) and nothing is ever answered; bytes sent on open connections
  are swallowed. The client only learns through its own timeouts, like a
  network partition.

Leaving ``blackhole`` resets the connections it swallowed bytes from: their
streams are broken, as after a long partition.

Plain threads, not asyncio: the proxy must keep working whatever the bot's
event loop is doing.
"""

from __future__ import annotations

import socket
import struct
import threading
from dataclasses import dataclass, field

MODES = ("pass", "drop", "blackhole")


def _reset(sock: socket.socket) -> None:
    """Close with RST (linger 0), waking any thread blocked reading it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@dataclass
class ProxyStats:
    """What the proxy did, so a test can prove a fault really happened."""

    accepted: int = 0
    forwarded_connections: int = 0
    reset_on_accept: int = 0
    held: int = 0
    reset_open: int = 0
    swallowed_bytes: int = 0
    upstream_refused: int = 0


@dataclass(eq=False)
class _Pipe:
    client: socket.socket
    upstream: socket.socket
    frozen: bool = False
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self, reset: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            if reset:
                _reset(sock)
            else:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream``; switch modes with
    :meth:`set_mode`."""

    def __init__(self, upstream_host: str, upstream_port: int, name: str = "proxy") -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        self._held: list[socket.socket] = []
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def open_connections(self) -> int:
        with self._lock:
            return len(self._pipes) + len(self._held)

    # --- switching -------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"proxy mode {mode!r} is not one of {MODES}")
        with self._lock:
            previous, self.mode = self.mode, mode
            pipes = list(self._pipes)
            held = list(self._held)
        if mode == "drop":
            self._reset_all(pipes, held)
        elif mode == "blackhole":
            for pipe in pipes:
                pipe.frozen = True
        elif previous != "pass":
            # Streams that lost bytes in a blackhole cannot be trusted again.
            self._reset_all([p for p in pipes if p.frozen], held)

    def reset_connections(self) -> int:
        """Reset every open connection once; new ones still pass."""
        with self._lock:
            pipes = list(self._pipes)
            held = list(self._held)
        self._reset_all(pipes, held)
        return len(pipes) + len(held)

    def _reset_all(self, pipes: list[_Pipe], held: list[socket.socket]) -> None:
        for pipe in pipes:
            pipe.close(reset=True)
            self.stats.reset_open += 1
        for sock in held:
            _reset(sock)
            self.stats.reset_open += 1
        with self._lock:
            self._pipes.difference_update(pipes)
            self._held = [s for s in self._held if s not in held]

    # --- the work --------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self.stats.accepted += 1
            mode = self.mode
            if mode == "drop":
                self.stats.reset_on_accept += 1
                _reset(client)
                continue
            if mode == "blackhole":
                self.stats.held += 1
                with self._lock:
                    self._held.append(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=2.0)
                upstream.settimeout(None)
            except OSError:
                self.stats.upstream_refused += 1
                _reset(client)
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(client, upstream)
            with self._lock:
                self._pipes.add(pipe)
            self.stats.forwarded_connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(pipe, src, dst), name=f"{self.name}-pump", daemon=True).start()

    def _pump(self, pipe: _Pipe, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if pipe.frozen:
                    self.stats.swallowed_bytes += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other as the real server would (FIN), or
        # with RST if we are the ones cutting it (already closed then).
        pipe.close()
        with self._lock:
            self._pipes.discard(pipe)

    def close(self) -> None:
        """Stop listening and reset every connection."""
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            pipes = list(self._pipes)
            held = list(self._held)
        self._reset_all(pipes, held)
        self._thread.join(timeout=2)
