"""download() against a local HTTP server on 127.0.0.1 (never the internet)."""

import contextlib
import errno
import hashlib
import importlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minires.data import DownloadError, download

download_module = importlib.import_module("minires.data.download")  # the module, not the function of that name

PAYLOAD = os.urandom(300_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/file.bin, and the anomalies: a slow drip, a stall, a truncated body, bad headers, a cut chunked body."""

    def do_GET(self):  # noqa: N802
        route = {"/file.bin": self._file, "/drip": self._drip, "/stall": self._stall, "/truncated": self._truncated,
                 "/bad-length": self._bad_length, "/garbage": self._garbage, "/chunked-cut": self._chunked_cut}
        route.get(self.path, lambda: self.send_error(404, "Not Found"))()

    def _headers(self, length):
        self.send_response(200)
        self.send_header("Content-Length", length)
        self.end_headers()
        self.wfile.flush()

    def _file(self):
        self._headers(str(len(PAYLOAD)))
        self.wfile.write(PAYLOAD)

    def _drip(self):  # a byte every 0.2 s: never idle long enough for a per-read timeout
        self._headers("1000")
        with contextlib.suppress(OSError):
            for _ in range(1000):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)

    def _stall(self):
        self._headers("1000")
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        time.sleep(3)

    def _truncated(self):
        self._headers("1000")
        self.wfile.write(b"x" * 500)
        self.close_connection = True

    def _bad_length(self):
        self._headers("abc")
        self.wfile.write(b"x" * 10)

    def _garbage(self):
        self.wfile.write(b"HELLO THERE\r\n\r\n")
        self.close_connection = True

    def _chunked_cut(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"100\r\n" + b"x" * 50)
        self.close_connection = True

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


def test_slow_drip_hits_the_overall_deadline(server, tmp_path):
    """A byte every 0.2 s never trips the 1 s per-read timeout; the 1.5 s deadline ends it."""
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"/drip did not finish within the deadline of 1.5 s \(\d+ of 1000 bytes"):
        download(f"{server}/drip", tmp_path / "x", progress=False, timeout=1, deadline=1.5)
    assert time.monotonic() - start < 4
    assert os.listdir(tmp_path) == []


def test_stalled_server_hits_the_read_timeout(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/stall failed after 10 bytes: no data for 0.5 s"):
        download(f"{server}/stall", tmp_path / "x", progress=False, timeout=0.5)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path, message", [
    ("/truncated", r"/truncated: the server announced 1000 bytes but sent 500 \(a truncated transfer\)"),
    ("/bad-length", r"/bad-length: the server sent a malformed Content-Length header 'abc'"),
    ("/garbage", r"/garbage failed: the server sent a malformed response"),
    ("/chunked-cut", r"/chunked-cut failed after \d+ bytes: IncompleteRead"),
])
def test_http_anomalies_are_download_errors_naming_the_url(server, tmp_path, path, message):
    """Without an md5 to check, a short or malformed transfer is still refused, and nothing is kept."""
    with pytest.raises(DownloadError, match=message):
        download(f"{server}{path}", tmp_path / "x", progress=False, timeout=5)
    assert os.listdir(tmp_path) == []


def test_malformed_url(tmp_path):
    with pytest.raises(DownloadError, match="cannot download nonsense"):
        download("nonsense", tmp_path / "x", progress=False)


def test_known_md5_is_checked_without_being_passed(server, tmp_path, monkeypatch):
    url = f"{server}/file.bin"
    monkeypatch.setitem(download_module.KNOWN_MD5, url, "0" * 32)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(url, tmp_path / "x", progress=False)
    assert os.listdir(tmp_path) == []
    monkeypatch.setitem(download_module.KNOWN_MD5, url, hashlib.md5(PAYLOAD).hexdigest())
    assert download(url, tmp_path / "x", progress=False) == str(tmp_path / "x")


def test_official_archives_have_known_md5():
    from minires.data import CIFAR10, CIFAR100

    assert download_module.KNOWN_MD5[CIFAR10.url] == CIFAR10.archive_md5
    assert download_module.KNOWN_MD5[CIFAR100.bin_url] == CIFAR100.bin_md5


def test_stale_parts_are_removed_live_ones_kept(server, tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f"file.bin.{dead}-abcd_123.part", tmp_path / "file.bin.k2j4h5g6.part"]  # new and old names
    live = tmp_path / f"file.bin.{os.getppid()}-zzzzzzzz.part"
    other = tmp_path / f"file.bin.gz.{dead}-abcdefgh.part"  # another file's download
    for path in stale + [live, other]:
        path.write_bytes(b"partial")
    download(f"{server}/file.bin", tmp_path / "file.bin", progress=False)
    assert sorted(os.listdir(tmp_path)) == sorted(["file.bin", live.name, other.name])


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_killed_download_leaves_a_part_that_the_next_one_removes(server, tmp_path):
    code = ("import sys; from minires.data import download; "
            "download(sys.argv[1], sys.argv[2], progress=False, timeout=5)")
    proc = subprocess.Popen([sys.executable, "-c", code, f"{server}/drip", str(tmp_path / "drip.bin")])
    try:
        deadline = time.monotonic() + 30
        while not any(n.endswith(".part") for n in os.listdir(tmp_path)):
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        time.sleep(0.5)  # a few bytes in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    (part,) = os.listdir(tmp_path)
    assert part.startswith(f"drip.bin.{proc.pid}-")
    with pytest.raises(DownloadError):
        download(f"{server}/truncated", tmp_path / "drip.bin", progress=False, timeout=5)
    assert os.listdir(tmp_path) == []


def test_full_disk_while_downloading(server, tmp_path, monkeypatch):
    """The destination's disk fills: a DownloadError naming the URL and the file, no .part left."""
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(download_module.os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(DownloadError, match=r"/file.bin: cannot write .*file.bin.\d+-\w+.part \(No space left on "
                                            r"device\); free some space"):
        download(f"{server}/file.bin", tmp_path / "file.bin", progress=False)
    assert os.listdir(tmp_path) == []
