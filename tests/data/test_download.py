"""download() against a local HTTP server on 127.0.0.1 (never the internet)."""

import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from minires.data import DownloadError, download

PAYLOAD = os.urandom(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path == "/file.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        else:
            self.send_error(404, "Not Found")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_with_checksum(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    out = download(f"{server}/file.bin", dest, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False)
    assert out == str(dest)
    assert dest.read_bytes() == PAYLOAD
    assert os.listdir(dest.parent) == ["file.bin"]  # no temporary file left


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    with pytest.raises(DownloadError, match="checksum mismatch.*not kept"):
        download(f"{server}/file.bin", dest, md5="0" * 32, progress=False)
    assert os.listdir(tmp_path) == []


def test_mismatch_keeps_an_existing_file_untouched(server, tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download(f"{server}/file.bin", dest, md5="0" * 32, progress=False)
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_http_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(f"{server}/missing", tmp_path / "x", progress=False)
    assert os.listdir(tmp_path) == []


def test_offline_error(tmp_path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="could not reach .*Are you offline"):
        download(f"http://127.0.0.1:{port}/file.bin", tmp_path / "x", progress=False, timeout=5)
    assert os.listdir(tmp_path) == []


def test_download_cifar_then_load(tmp_path, monkeypatch, rng):
    """`--download`: the official archive name in the cache, md5-checked, then read in place."""
    import dataclasses
    import functools

    from minires.data import CIFAR10, load_dataset, md5_of
    from minires.data import sources

    from .cifar_fixtures import write_cifar10_python

    served = tmp_path / "served"
    train, _ = write_cifar10_python(served, rng, tar=True)
    archive = served / "cifar-10-python.tar.gz"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-python.tar.gz"
        local = dataclasses.replace(CIFAR10, url=url, archive_md5=md5_of(archive))
        monkeypatch.setattr(sources, "get_layout", lambda name: local)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.delenv("MINIRES_DATA", raising=False)
        monkeypatch.chdir(tmp_path)
        path = sources.download_cifar("cifar10", progress=False)
        assert path == str(tmp_path / "home" / ".cache" / "minires" / "cifar-10-python.tar.gz")
        tr, _ = load_dataset(None, "cifar10")
        np.testing.assert_array_equal(tr.images, train[0])
        # a server with different bytes: refused, nothing kept
        bad = dataclasses.replace(local, archive_md5="0" * 32)
        monkeypatch.setattr(sources, "get_layout", lambda name: bad)
        with pytest.raises(DownloadError, match="checksum mismatch"):
            sources.download_cifar("cifar10", root=tmp_path / "other", progress=False)
        assert not (tmp_path / "other" / "cifar-10-python.tar.gz").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()
