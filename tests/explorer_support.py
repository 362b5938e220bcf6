"""What the explorer's tests share: a tiny trained SparseCBM, a copy of its folder per
test, the explorer over its dev split, and the explorer behind a real uvicorn
server on loopback: the helpers (the fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import threading
import time
from pathlib import Path

LOCAL = "http://127.0.0.1:8765"  # the address a TestClient's requests name


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file of a model folder and its content hash: what 'nothing changed on disk' compares."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fixable(http, headers: dict | None = None):
    """(row, concept, value, predicted) of a correction whose preview fixes it (the tiny model cannot fix every one)."""
    model = http.get("/api/model", headers=headers).json()
    for index in range(model["split"]["n"]):
        e = http.post("/api/explain", json={"index": index}, headers=headers).json()
        for c in e["concepts"]:
            for value in model["concepts"][c["name"]]:
                if value == c["value"]:
                    continue
                r = http.post("/api/preview", json={"index": index, "concept": c["name"], "value": value},
                              headers=headers).json()
                if r["result"]["fixed"]:
                    return index, c["name"], value, c["value"]
    raise AssertionError("no correction of the tiny model is fixable")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None):
    """An ASGI app under a real uvicorn server on 127.0.0.1; yields its base URL."""
    import uvicorn

    port = port or free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


def chromium_path() -> str:
    return shutil.which("chromium") or "/usr/bin/chromium"
