"""A request whose body never arrives whole (the client's connection closes first) is not
acted on, on a real server: the part that arrived was taken for the whole body, so a
propose short of its declared length made its order (found by a pass at the HTTP
protocol's level)."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

from tests.api.conftest import PREFIX, Server


def _cut_short(server: Server, path: str, body: bytes, missing: int) -> None:
    url = urlsplit(server.url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\n"
        f"Authorization: Bearer {server.tokens['admin']}\r\n"
        "Content-Type: application/json\r\nX-Idempotency-Key: cut-short-1\r\n"
        f"Content-Length: {len(body) + missing}\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        sock.shutdown(socket.SHUT_WR)  # gone: the rest never comes
        assert sock.recv(65536) == b""  # and nothing is answered


def test_a_propose_cut_short_makes_no_order(db_server: Server) -> None:
    admin = db_server.client()

    def orders() -> int:
        listed = admin.get(f"{PREFIX}/orders", params={"filter[type]": "test.simple"})
        assert listed.status_code == 200, listed.text
        return len(listed.json()["data"])

    before = orders()
    body = json.dumps({"type": "test.simple", "payload": {}})
    _cut_short(db_server, f"{PREFIX}/propose", body.encode(), missing=20)
    time.sleep(0.5)  # had it run, its order would be there by now
    assert orders() == before
