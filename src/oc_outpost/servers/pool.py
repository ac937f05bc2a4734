"""TCP ports for managed OpenCode servers: the pool (OPENCODE_PORT_START .. + POOL_SIZE) and
the probes that decide whether a port is free (nothing listens on it and it can be bound)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Container

CONNECT_PROBE_TIMEOUT_S = 0.2
HOST = "127.0.0.1"


class PortsExhausted(RuntimeError):
    """No port of the requested range is free."""


class PortPool:
    """Ports handed out to managed servers; a port is given out only while nothing listens on it.

    Ports held by other programs are skipped (never touched); a released port can be reused.
    """

    def __init__(
        self,
        start: int,
        size: int,
        *,
        host: str = HOST,
        is_free: Callable[[int, str], bool] | None = None,
    ) -> None:
        if size < 1 or not 0 < start <= 65535 or start + size - 1 > 65535:
            raise ValueError(f"invalid port pool: start={start}, size={size}")
        self._range = range(start, start + size)
        self._host = host
        self._is_free = is_free or is_port_free
        self._taken: set[int] = set()

    @property
    def ports(self) -> range:
        return self._range

    @property
    def total(self) -> int:
        return len(self._range)

    @property
    def used(self) -> int:
        return len(self._taken)

    def __contains__(self, port: object) -> bool:
        return port in self._range

    def allocate(self, prefer: int | None = None) -> int:
        """Reserve and return a free port: `prefer` if it is free, else the lowest free one."""
        candidates = [prefer] if prefer is not None and prefer in self._range else []
        candidates.extend(self._range)
        for port in candidates:
            if port not in self._taken and self._is_free(port, self._host):
                self._taken.add(port)
                return port
        raise PortsExhausted(
            f"no free port in the OpenCode port pool {self._range.start}-{self._range.stop - 1} "
            f"({self.used} used by oc-outpost, the rest taken by other programs); stop idle "
            "servers or enlarge OPENCODE_PORT_POOL_SIZE"
        )

    def reserve(self, port: int) -> None:
        """Mark a port as ours without probing it (an adopted server already listens on it)."""
        self._taken.add(port)

    def release(self, port: int | None) -> None:
        if port is not None:
            self._taken.discard(port)


def find_free_port(
    start: int, count: int, host: str = HOST, *, exclude: Container[int] = ()
) -> int:
    """The first port in `[start, start + count)` that can be bound and has no listener."""
    if count < 1 or not 0 < start <= 65535:
        raise ValueError(f"invalid port range: start={start}, count={count}")
    end = min(start + count, 65536)
    for port in range(start, end):
        if port not in exclude and is_port_free(port, host):
            return port
    raise PortsExhausted(
        f"no free port on {host} in {start}-{end - 1} ({end - start} ports checked); "
        "stop idle servers or enlarge the port pool"
    )


def is_port_free(port: int, host: str = HOST) -> bool:
    return _can_bind(port, host) and not _has_listener(port, host)


def _can_bind(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR too, so leftover TIME_WAIT connections must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _has_listener(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_PROBE_TIMEOUT_S)
        return sock.connect_ex((host, port)) == 0
