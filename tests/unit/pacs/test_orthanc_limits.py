"""OrthancApi.instance_file with a size limit, against a real local HTTP server: a body whose
Content-Length is over the limit is refused before it is read, one without a length (chunked)
as soon as it passes the limit; the server sees the client leave early either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dicomnode.pacs.orthanc import InstanceTooLarge, OrthancApi

CHUNK = 64 * 1024
HUGE = 10 * 2**30  # announced or streamed: 10 GiB, far more than the test could hold


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        kind = self.path.split("/")[2]  # /instances/<kind>/file
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom")
        if kind == "small":
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            return
        if kind == "announced":
            self.send_header("Content-Length", str(HUGE))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        try:
            while sent < HUGE:
                block = b"x" * CHUNK
                if kind == "announced":
                    self.wfile.write(block)
                else:
                    self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sent += len(block)
        except OSError:
            pass  # the client went away: what this test wants
        finally:
            self.server.sent.append(sent)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.sent = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["announced", "chunked"])
def test_an_instance_over_the_limit_is_never_read_whole(server, kind):
    api = OrthancApi(url=f"http://127.0.0.1:{server.server_port}", timeout=10)
    try:
        limit = 2 * 2**20
        with pytest.raises(InstanceTooLarge):
            api.instance_file(kind, max_bytes=limit)
        assert api.instance_file("small", max_bytes=limit) == b"x" * 1000
        assert api.instance_file("small") == b"x" * 1000  # no limit: the plain call
    finally:
        api.close()
    server.shutdown()  # waits for the handlers: the big one stopped when the client left
    assert server.sent and max(server.sent) < 512 * 2**20, server.sent
