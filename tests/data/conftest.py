"""Fixtures for the dataset tests: a shared decode cache, tiny image folders and a local
HTTP server that serves the bundled Omniglot archives (plus broken responses)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import metamem
from metamem.data import ImageDataset

BUNDLED = Path(__file__).resolve().parents[2] / "datasets" / "omniglot"
SMALL1 = BUNDLED / "images_background_small1.zip"
SMALL2 = BUNDLED / "images_background_small2.zip"


@pytest.fixture(scope="session")
def omni_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decode cache shared by the Omniglot tests of the session."""
    return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def small1_20(omni_cache: Path) -> ImageDataset:
    """background_small1 at 20x20 (decoded once per session)."""
    return metamem.load_dataset(
        "omniglot", split="background_small1", image_size=20, cache_dir=omni_cache
    )


def _write_png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")
    return path


@pytest.fixture(scope="session")
def write_png() -> Callable[[Path, np.ndarray], Path]:
    """``write_png(path, uint8 array HW or HWC)``: save a PNG (parents created)."""
    return _write_png


@pytest.fixture(scope="session")
def md5sum() -> Callable[[Path], str]:
    return lambda path: hashlib.md5(Path(path).read_bytes()).hexdigest()


HTML = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>\n"


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[str, bytes, int | None]] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        ctype, body, send = route
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if send is None else body[:send])
        self.wfile.flush()
        if send is not None:  # truncated: drop the connection early
            self.close_connection = True

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Base URL of a local HTTP server on 127.0.0.1 (stops itself after 120 s at most)."""
    s1, s2 = SMALL1.read_bytes(), SMALL2.read_bytes()
    _Handler.routes = {
        "/ok/images_background_small1.zip": ("application/zip", s1, None),
        "/ok/images_background_small2.zip": ("application/zip", s2, None),
        "/html/images_background_small1.zip": ("text/html; charset=utf-8", HTML, None),
        "/htmlbody/images_background_small1.zip": ("application/octet-stream", HTML, None),
        "/trunc/images_background_small1.zip": ("application/zip", s1, len(s1) // 3),
        "/badzip/images_background_small1.zip": ("application/zip", s1[: len(s1) // 2], None),
        "/wrong/images_background_small1.zip": ("application/zip", s2, None),
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(120.0, httpd.shutdown)
    guard.daemon = True
    guard.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        guard.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server_for() -> Iterator[Callable[[dict[str, tuple[str, bytes]]], str]]:
    """``server_for({path: (content type, body)})``: base URL of a local HTTP server serving
    those routes (stopped after the test)."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, tuple[str, bytes]]) -> str:
        handler = type("Routes", (_Handler,), {"routes": {k: (c, b, None) for k, (c, b) in routes.items()}})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
