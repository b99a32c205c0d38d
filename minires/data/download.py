"""Downloading files: a progress bar, a checksum, and no half-written file left behind."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request

from tqdm.auto import tqdm


class DownloadError(RuntimeError):
    """A download failed (offline, HTTP error, or a checksum mismatch)."""


def download(url: str, dest, md5: str | None = None, progress: bool = True, timeout: float = 30.0,
             chunk: int = 1 << 16) -> str:
    """Download ``url`` to the file ``dest``.

    The bytes go to a temporary file beside ``dest`` that is renamed to ``dest`` only once
    the transfer is complete and, when ``md5`` is given, its checksum matches; on any
    failure the temporary file is removed and ``dest`` is untouched.

    Args:
        url: an http(s) or file URL.
        dest: the destination file path (its directory is created).
        md5: expected hex md5 of the content; a mismatch raises.
        progress: show a tqdm progress bar.
        timeout: seconds to wait for the server before giving up.
        chunk: read size in bytes.

    Returns:
        ``dest`` as a string.

    Raises:
        DownloadError: the server could not be reached (e.g. offline), answered with an
            HTTP error, or the checksum did not match.
    """
    dest = os.fspath(dest)
    folder = os.path.dirname(os.path.abspath(dest))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dest) + ".", suffix=".part", dir=folder)
    digest = hashlib.md5()
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (user-given URL)
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not reach {url} ({reason}). Are you offline? Download the file on a machine "
                f"with internet access, copy it to {dest}, and run again (or pass --data PATH)") from None
        with response, os.fdopen(fd, "wb") as out:
            fd = None
            total = response.headers.get("Content-Length")
            bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=os.path.basename(dest), disable=not progress, leave=False)
            with bar:
                try:
                    while block := response.read(chunk):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
                except OSError as exc:
                    raise DownloadError(f"downloading {url} was interrupted: {exc}") from None
            out.flush()
            os.fsync(out.fileno())
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DownloadError(
                f"checksum mismatch for {url}: got md5 {digest.hexdigest()}, expected {md5}; "
                "the file was not kept (a corrupt transfer or a different file on the server)")
        os.replace(tmp, dest)
        tmp = None
        return dest
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
