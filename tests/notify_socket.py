"""A datagram socket in systemd's place ($NOTIFY_SOCKET), for the sd_notify tests."""

from __future__ import annotations

import socket
import threading
import time


class NotifySocket:
    """Binds ``address`` (a path, or an abstract name starting with a NUL byte); a thread
    hands every datagram to :meth:`received`, with when it arrived (time.monotonic)."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self._closing = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:  # closed
                return
            if self._closing:  # recv returns b"" once the socket is shut down
                return
            self.received(time.monotonic(), data.decode())

    def received(self, at: float, text: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._closing = True
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=10)
