"""A twin's background ZMQ service: a socket on 127.0.0.1 served by its own thread.

The camera publisher and the scene channel share the lifecycle: ``start`` binds (to the given
port or a free one, then in :attr:`port`) and returns once the thread runs or re-raises why it
could not; ``stop`` ends the thread and closes the socket.
"""

from __future__ import annotations

import threading


class TwinService:
    """Subclasses set ``socket_type`` (a ``zmq`` constant's name) and ``thread_name``, and
    implement :meth:`_serve` (the loop, until ``self._stop`` is set); :meth:`_setup` runs on
    the thread after binding, before start() returns."""

    socket_type = "PUB"
    thread_name = "twin-service"

    def __init__(self, twin, port: int = 0, host: str = "127.0.0.1"):
        self.twin = twin
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30.0)
        if self._error is not None:
            raise RuntimeError(
                f"{self.thread_name} failed to start: {self._error}"
            ) from self._error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _setup(self, socket) -> None:
        """Per-socket options and thread-bound resources, before binding."""

    def _serve(self, socket) -> None:
        raise NotImplementedError

    def _teardown(self) -> None:
        """Frees what _setup made (on the service's thread)."""

    def _run(self) -> None:
        import zmq

        try:
            context = zmq.Context()
            socket = context.socket(getattr(zmq, self.socket_type))
            socket.setsockopt(zmq.LINGER, 0)
            self._setup(socket)
            if self.requested_port:
                socket.bind(f"tcp://{self.host}:{self.requested_port}")
                self.port = self.requested_port
            else:
                self.port = socket.bind_to_random_port(f"tcp://{self.host}")
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve(socket)
        finally:
            self._teardown()
            socket.close()
            context.term()
