"""Downloading files: a progress bar, a checksum, deadlines, and no half-written file left behind.

The bytes go to ``DEST.<pid>-<random>.part`` beside ``DEST``, which is renamed to ``DEST``
only once the transfer is complete (as many bytes as ``Content-Length`` announced) and its
md5 matches (given, or known for the official CIFAR archives). On any failure the
``.part`` file is removed; one left by a killed download is removed by the next download
of the same file. Two limits apply: ``timeout`` bounds each wait for the server (connect,
every read) and ``deadline`` the whole transfer, so a server that drips a byte now and then
cannot keep a download alive forever. Every failure is a :class:`DownloadError` naming the
URL.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import os
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request

from tqdm.auto import tqdm

from .cifar import LAYOUTS

#: md5 of the files whose checksum is published: the official CIFAR archives
KNOWN_MD5 = {url: md5 for layout in LAYOUTS.values()
             for url, md5 in ((layout.url, layout.archive_md5), (layout.bin_url, layout.bin_md5))}

DEFAULT_DEADLINE = 3600.0


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, a stalled or truncated transfer, a checksum mismatch)."""


def download(url: str, dest, md5: str | None = None, progress: bool = True, timeout: float = 30.0,
             chunk: int = 1 << 16, deadline: float | None = DEFAULT_DEADLINE) -> str:
    """Download ``url`` to the file ``dest``; ``dest`` appears only when complete and verified.

    Args:
        url: an http(s) or file URL.
        dest: the destination file path (its directory is created).
        md5: expected hex md5 of the content (default: :data:`KNOWN_MD5`'s entry for
            ``url``, if any); a mismatch raises.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server at any one moment (connecting, each read).
        chunk: read size in bytes.
        deadline: seconds the whole download may take (None: no limit).

    Returns:
        ``dest`` as a string.

    Raises:
        DownloadError: the server could not be reached (e.g. offline), answered with an
            HTTP error or a malformed header, stalled past ``timeout``, was still sending at
            ``deadline``, sent fewer bytes than announced, or the checksum did not match.
            The message names the URL; no ``.part`` file is left behind.
    """
    dest = os.fspath(dest)
    md5 = md5 if md5 is not None else KNOWN_MD5.get(url)
    folder = os.path.dirname(os.path.abspath(dest))
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_parts(dest)
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(dest)}.{os.getpid()}-", suffix=".part", dir=folder)
    except OSError as exc:
        raise DownloadError(f"cannot download {url}: cannot write into {folder} ({exc.strerror or exc})") from None
    watchdog = _Watchdog(deadline)
    try:
        with os.fdopen(fd, "wb") as out, watchdog:
            digest = _transfer(url, dest, out, tmp, watchdog, timeout, chunk, progress)
        if md5 is not None and digest != md5.lower():
            raise DownloadError(
                f"checksum mismatch for {url}: got md5 {digest}, expected {md5}; "
                "the file was not kept (a corrupt transfer or a different file on the server)")
        os.replace(tmp, dest)
        tmp = None
        return dest
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def remove_stale_parts(dest) -> list[str]:
    """Remove the ``.part`` files of downloads of ``dest`` whose process is gone; return their paths."""
    dest = os.fspath(dest)
    pattern = re.compile(re.escape(os.path.basename(dest)) + r"\.(?:(\d+)-)?[a-z0-9_]{8}\.part")
    removed = []
    for path in glob.glob(glob.escape(dest) + ".*.part"):
        match = pattern.fullmatch(os.path.basename(path))
        if match is None or (match.group(1) and _alive(int(match.group(1)))):
            continue  # another file's, or a download in progress in a live process
        with contextlib.suppress(OSError):
            os.remove(path)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by another user
        return True
    return True


def _transfer(url, dest, out, tmp, watchdog, timeout, chunk, progress) -> str:
    """Copy the response body into ``out``; return its md5 (hex)."""
    digest, received = hashlib.md5(), 0
    try:
        with _open(url, dest, timeout, watchdog) as response:
            total = _content_length(response, url)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=os.path.basename(dest),
                      disable=not progress, leave=False) as bar:
                read = getattr(response, "read1", response.read)  # read1: what has arrived, without waiting for more
                while block := read(chunk):
                    watchdog.check(url, received, total)
                    _write(out, block, url, tmp)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        watchdog.check(url, received, total)
    except (OSError, http.client.HTTPException) as exc:  # reset, stalled past `timeout`, chunked stream cut
        watchdog.check(url, received, None)
        stalled = isinstance(exc, (socket.timeout, TimeoutError))
        raise DownloadError(f"downloading {url} failed after {received} bytes: "
                            f"{f'no data for {timeout:g} s' if stalled else f'{type(exc).__name__}: {exc}'}; "
                            "try again later") from None
    if total is not None and received != total:
        raise DownloadError(f"downloading {url}: the server announced {total} bytes but sent {received} "
                            "(a truncated transfer); nothing was kept, try again")
    _write(out, None, url, tmp)
    return digest.hexdigest()


def _write(out, block, url, tmp) -> None:
    """Write ``block`` to ``out`` (None: flush and fsync), a failure as a :class:`DownloadError`."""
    try:
        if block is None:
            out.flush()
            os.fsync(out.fileno())
        else:
            out.write(block)
    except OSError as exc:
        raise DownloadError(f"downloading {url}: cannot write {tmp} ({exc.strerror or exc}); free some space or "
                            "choose another destination") from None


def _open(url, dest, timeout, watchdog):
    try:
        return watchdog.opener().open(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
    except http.client.HTTPException as exc:  # a malformed status line or headers
        watchdog.check(url, 0, None)
        raise DownloadError(f"downloading {url} failed: the server sent a malformed response "
                            f"({type(exc).__name__}: {exc}); try again later") from None
    except (urllib.error.URLError, OSError) as exc:
        watchdog.check(url, 0, None)
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise DownloadError(
            f"could not reach {url} ({reason}). Are you offline? Download the file on a machine "
            f"with internet access, copy it to {dest}, and run again (or pass --data PATH)") from None
    except ValueError as exc:  # unknown URL type, malformed URL
        raise DownloadError(f"cannot download {url}: {exc}") from None


def _content_length(response, url) -> int | None:
    text = response.headers.get("Content-Length") if response.headers is not None else None
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        raise DownloadError(f"downloading {url}: the server sent a malformed Content-Length header {text!r}; "
                            "try again later or download the file another way")
    return int(text)


class _Watchdog:
    """Enforces the overall deadline: when it passes, the open connections are shut down.

    A read blocked on a server that sends a byte every few seconds never reaches the
    per-read timeout; shutting the socket down from this thread ends that read at once.
    """

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.expired = False
        self._sockets = []
        self._done = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.deadline is not None:
            self._start = time.monotonic()
            self._thread = threading.Thread(target=self._watch, name="minires-download-deadline", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self):
        if self._done.wait(self.deadline):
            return
        self.expired = True
        while True:  # connections opened after expiry are shut too
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            if self._done.wait(0.05):
                return

    def check(self, url, received, total) -> None:
        """Raise :class:`DownloadError` once the deadline has passed."""
        if self.expired or (self._thread is not None and time.monotonic() - self._start > self.deadline):
            self.expired = True
            of = f" of {total}" if total is not None else ""
            raise DownloadError(f"downloading {url} did not finish within the deadline of {self.deadline:g} s "
                                f"({received}{of} bytes received; the server is too slow); nothing was kept: "
                                "try again later or download the file another way")

    def opener(self):
        """A urllib opener whose HTTP(S) connections this watchdog can shut down."""
        watchdog = self

        def watched(connection_class):
            def create(*args, **kwargs):
                connection = connection_class(*args, **kwargs)
                connect = connection.connect

                def connect_and_register():  # urllib drops connection.sock once the headers are read
                    connect()
                    watchdog._sockets.append(connection.sock)
                connection.connect = connect_and_register
                return connection
            return create

        def watching(handler_class):
            class Handler(handler_class):
                def do_open(self, http_class, req, **kwargs):
                    return super().do_open(watched(http_class), req, **kwargs)
            return Handler

        bases = [urllib.request.HTTPHandler, getattr(urllib.request, "HTTPSHandler", None)]  # (None: no ssl)
        return urllib.request.build_opener(*(watching(base) for base in bases if base is not None))
