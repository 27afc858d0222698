"""A raw HTTP/1.1 client for hostile requests: headers that lie, bodies that stall or never end.

httpx (like any polite client) sends the whole body before it reads the answer, and a server that
answers early and closes makes it fail with a broken pipe instead of showing the answer. Here the
body goes out piece by piece, and after each piece the client looks for an answer and stops sending
as soon as one arrives, as a browser does.
"""

from __future__ import annotations

import dataclasses
import http.client
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Answer:
    status: int | None  # None: no answer before the timeout, or the connection closed without one
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the answer's last byte

    def json(self):
        import json

        return json.loads(self.body)


def send(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | Iterable[bytes] = b"",
    pause: float = 0.0,
    timeout: float = 15.0,
    host: str | None = None,
) -> Answer:
    """One request on a fresh connection. `body` bytes are sent in 64 KiB pieces, an iterable piece by
    piece with `pause` seconds between pieces; sending stops as soon as the server answers."""
    headers = {"Host": host or f"127.0.0.1:{port}", **(headers or {})}
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)] if isinstance(body, bytes) else body
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        received = bytearray()
        try:
            sock.sendall(head.encode("latin-1"))
            for piece in pieces:
                if readable(sock):
                    break
                sock.sendall(piece)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read what it said
        deadline = started + timeout
        try:
            while not complete(received) and time.monotonic() < deadline:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return parse(bytes(received), time.monotonic() - started)


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def complete(data: bytes) -> bool:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def parse(data: bytes, seconds: float) -> Answer:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return Answer(None, {}, data, seconds)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body, seconds)


def health_seconds(port: int, timeout: float = 5.0) -> float:
    """How long GET /health takes on a fresh connection (connect included)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
    finally:
        connection.close()
    return time.monotonic() - started


def answers_ready(port: int, timeout: float = 2.0) -> bool:
    """Whether GET /ready answers 200. The standard library's client: httpx.get builds an SSL context on
    every call (~35 ms of CPU), which a tight poll takes from the server starting beside it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/ready")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def while_probing_health(port: int, request: Callable[[], Answer], every: float = 0.05) -> tuple[Answer, list[float]]:
    """Run `request` in a thread and time GET /health again and again, from the moment the request is
    sent until it is answered (at least once)."""
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(request()), daemon=True)
    worker.start()
    timings = []
    while worker.is_alive() or not timings:
        timings.append(health_seconds(port))
        worker.join(every)  # the pause between probes, cut short when the request is answered
    worker.join()
    return outcome[0], timings
