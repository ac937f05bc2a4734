"""A local HTTP server that plays a scaled recorded turn as OpenCode's `/global/event` stream.

    python bench/sse_server.py --port 4567 --events 100000 --interval-us 500

Run as a separate process by `bench/event_bench.py --transport tcp`, so the bench process's CPU
is the bot's alone. Each frame is one HTTP chunk, written with TCP_NODELAY and followed by a
pause of `--interval-us` (time.sleep: at least that long), so that, as with OpenCode streaming
an answer, the client gets about one frame per read instead of many frames coalesced. The
connection then stays open until the client closes it. `GET /session/{id}/message` and
`GET /session/{id}` answer as OpenCode would at the end of the turn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recorded_turn import Turn, scaled_turn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--interval-us", type=float, default=500.0)
    arguments = parser.parse_args()
    turn = scaled_turn(arguments.events)
    with socket.create_server(("127.0.0.1", arguments.port)) as server:
        print("ready", flush=True)
        while True:
            connection, _ = server.accept()
            handler = threading.Thread(
                target=serve_connection,
                args=(connection, turn, arguments.interval_us / 1e6),
                daemon=True,
            )
            handler.start()


def serve_connection(connection: socket.socket, turn: Turn, interval_s: float) -> None:
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # the bench may hang up before the turn's last frames: it has what it measures
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        serve_requests(connection, turn, interval_s)


def serve_requests(connection: socket.socket, turn: Turn, interval_s: float) -> None:
    with connection, connection.makefile("rb") as reader:
        while path := read_request(reader):
            if path.startswith("/global/event"):
                stream(connection, turn, interval_s)
                reader.read()  # until the client goes away
                return
            respond(connection, turn, path)


def read_request(reader: BinaryIO) -> str | None:
    line = reader.readline()
    if not line:
        return None
    while reader.readline() not in (b"\r\n", b"\n", b""):
        pass
    return line.split(b" ")[1].decode()


def stream(connection: socket.socket, turn: Turn, interval_s: float) -> None:
    connection.sendall(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for frame in turn.frames:
        connection.sendall(b"%x\r\n%b\r\n" % (len(frame), frame))
        if interval_s:
            time.sleep(interval_s)


def respond(connection: socket.socket, turn: Turn, path: str) -> None:
    if path.startswith(f"/session/{turn.session_id}/message"):
        status, body = b"200 OK", json.dumps(turn.messages).encode()
    elif path.startswith(f"/session/{turn.session_id}"):
        status, body = b"200 OK", json.dumps(turn.session).encode()
    else:
        status, body = b"404 Not Found", b'{"name":"NotFoundError","data":{}}'
    connection.sendall(
        b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
        % (status, len(body), body)
    )


if __name__ == "__main__":
    main()
