"""Finding a free TCP port for a managed OpenCode server."""

from __future__ import annotations

import socket
from collections.abc import Container

CONNECT_PROBE_TIMEOUT_S = 0.2


class PortsExhausted(RuntimeError):
    """No port of the requested range is free."""


def find_free_port(
    start: int, count: int, host: str = "127.0.0.1", *, exclude: Container[int] = ()
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


def is_port_free(port: int, host: str = "127.0.0.1") -> bool:
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
