"""The engine's own TLS connect (non-blocking handshake) against a loopback HTTPS
server with a throw-away certificate: verified when trusted, refused when not."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from worker_runtime.engines import RunSignal
from worker_runtime.engines.http_stream import AbortableConnection

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    argv += ["-subj", f"/CN={name}", "-addext", f"subjectAltName={name}"]
    subprocess.run(
        [*argv, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate for ``IP:127.0.0.1``, and
    another certificate (for a different name) to trust instead."""
    cert, key = _certificate(tmp_path, "IP:127.0.0.1")
    other, _ = _certificate(tmp_path, "DNS:elsewhere.invalid")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1], cert, other
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(port: int, trusted: Path) -> str:
    tls = ssl.create_default_context(cafile=str(trusted))
    url = urlsplit(f"https://127.0.0.1:{port}/v1?x=1")
    with AbortableConnection(url, timeout=10, signal=RunSignal(), tls=tls) as conn:
        conn.request("GET", "/v1?x=1")
        response = conn.getresponse()
        return f"{response.status} {response.read().decode()}"


def test_a_trusted_certificate_is_accepted(https: tuple[int, Path, Path]) -> None:
    port, cert, _ = https
    assert _get(port, cert) == "200 hello /v1?x=1"


def test_an_untrusted_certificate_is_refused(https: tuple[int, Path, Path]) -> None:
    port, _, other = https
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(port, other)
