"""An output folder belongs to one run: a lock, a claim, and the files moved aside on request.

- **Lock**: :meth:`RunDirectory.lock` takes an advisory ``fcntl.flock`` on
  ``OUT/.minires.lock`` and writes the holder's pid into it. The operating system
  releases the lock when the process ends, however it ends (a SIGKILLed run never blocks
  the next), and a second writer is refused with the holder's pid.
- **Claim**: :meth:`RunDirectory.run_files` lists the files a run writes (:data:`RUN_FILES`)
  that are present; a new run refuses such a folder unless told to continue it
  (``--resume``) or to start again, in which case :meth:`RunDirectory.move_aside` moves
  them into ``OUT/previous-<time>/`` (never deleting anything).
- **Write errors**: :func:`writing` turns an ``OSError`` (disk full, permissions, a file
  where a folder should be) into a :class:`RunDirError` naming the file and what to do.

With data parallelism only rank 0 should create a :class:`RunDirectory` and hold its lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time

from .checkpoint import read_checkpoint_meta
from .errors import TrainingError

LOCK_NAME = ".minires.lock"
CHECKPOINT = "checkpoint.npz"
CONFIG = "config.json"
GRADIENTS = "gradients.jsonl"
#: the files a run writes into its output folder (what --overwrite moves aside)
RUN_FILES = (CONFIG, "metrics.jsonl", GRADIENTS, CHECKPOINT, "model.npz", "curves.png")
#: prefixes of the temporary files of atomic writes (``atomic_write`` names them ``.NAME.XXXX.tmp``)
TEMP_PREFIXES = tuple(f".{name}." for name in RUN_FILES)


class RunDirError(TrainingError):
    """The output folder cannot be used: busy, already holding a run, unwritable, full, ..."""


class RunDirLockedError(RunDirError):
    """Another live process holds the output folder's lock."""


def _advice(exc: OSError, out: str) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full. The files already in {out} are intact: free some space, then continue with "
                f"`minires train --out {out} --resume`")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{out} is not writable: fix its permissions or choose another --out"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"--out {out} (or a folder above it) is a file, not a folder: choose another --out"
    return f"check --out {out}"


@contextlib.contextmanager
def writing(path, out):
    """Translate an ``OSError`` raised inside the block into a :class:`RunDirError`.

    Args:
        path: the file being written (named in the message).
        out: the run's output folder (named in the advice).
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RunDirError(f"cannot write {path}: {reason}; {_advice(exc, os.fspath(out))}") from exc


class RunDirectory:
    """One run's output folder: its lock and its files.

    Args:
        path: the folder (created by :meth:`lock` when missing).

    Raises:
        RunDirError: ``path`` exists and is not a folder.
    """

    def __init__(self, path):
        self._lock_fd = None
        self.path = os.path.abspath(os.fspath(path))
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirError(f"--out {path} is a file, not a folder: choose another --out")

    def file(self, name: str) -> str:
        """The path of ``name`` inside the folder."""
        return os.path.join(self.path, name)

    @property
    def locked(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Create the folder if needed and take its lock (non-blocking).

        Raises:
            RunDirLockedError: another process holds it; the message names its pid.
            RunDirError: the folder cannot be created or written.
        """
        if self._lock_fd is not None:
            return
        path = self.file(LOCK_NAME)
        with writing(path, self.path):
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_flock(fd):
                raise RunDirLockedError(
                    f"--out {self.path} is in use by another minires run ({_describe_holder(path)}); wait for it to "
                    "finish or stop it, or choose another --out")
            with writing(path, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                         "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def release(self) -> None:
        """Release the lock (closing the file releases the ``flock``); idempotent."""
        if self._lock_fd is not None:
            fd, self._lock_fd = self._lock_fd, None
            os.close(fd)

    def __enter__(self) -> "RunDirectory":
        self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()

    def run_files(self) -> list[str]:
        """The names of :data:`RUN_FILES` present in the folder."""
        return [name for name in RUN_FILES if os.path.lexists(self.file(name))]

    def move_aside(self, names) -> str | None:
        """Move ``names`` into a new ``previous-<time>/`` subfolder; return its path (None if none moved)."""
        names = [n for n in names if os.path.lexists(self.file(n))]
        if not names:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target, n = self.file(f"previous-{stamp}"), 1
        while os.path.lexists(target):
            n += 1
            target = self.file(f"previous-{stamp}-{n}")
        with writing(target, self.path):
            os.mkdir(target)
            for name in names:
                os.replace(self.file(name), os.path.join(target, name))
        return target

    def claim(self, resume: bool, overwrite: bool, check_settings, log) -> str | None:
        """Decide what becomes of the run files in the (locked) folder.

        - ``resume`` with a checkpoint: return its path (the caller loads and checks it);
        - ``resume`` without one: the run starts again from epoch 1; its ``config.json`` must
          pass ``check_settings`` and its files are moved aside;
        - neither flag, and the folder holds run files: :class:`RunDirError`;
        - ``overwrite``: the run files are moved aside.

        Args:
            resume: continue the run in the folder.
            overwrite: start again, moving the old run's files aside.
            check_settings: ``check_settings(saved_settings, source_path)`` raises when the
                new run's settings differ from the saved ones.
            log: called with one line describing what was done.

        Returns:
            The checkpoint to resume, or None.
        """
        self.remove_stale_temp_files()
        existing = self.run_files()
        if resume and os.path.isfile(self.file(CHECKPOINT)):
            return self.file(CHECKPOINT)
        if resume and existing:
            if not os.path.isfile(self.file(CONFIG)):
                raise RunDirError(
                    f"--resume: {self.path} holds {', '.join(existing)} but neither {CHECKPOINT} nor {CONFIG}, so "
                    "the settings that made them are unknown; start again with --overwrite (moves them aside) or "
                    "choose another --out")
            check_settings(read_config_json(self.file(CONFIG)), self.file(CONFIG))
            log(f"--resume: no {CHECKPOINT} in {self.path}; starting the run again from epoch 1 with the settings "
                f"of its {CONFIG} (its earlier files are kept in {self.move_aside(existing)})")
        elif resume:
            log(f"--resume: {self.path} holds no run yet; starting a new one")
        elif existing:
            if not overwrite:
                raise RunDirError(
                    f"{self.path} already holds a run ({', '.join(existing)}); pass --resume to continue it, "
                    "--overwrite to move its files aside and start again, or choose another --out")
            log(f"--overwrite: moved {', '.join(existing)} of the previous run to {self.move_aside(existing)}")
        return None

    def remove_stale_temp_files(self) -> None:
        """Delete temporary files of atomic writes that a killed run left behind (needs the lock)."""
        if not os.path.isdir(self.path):
            return
        for name in os.listdir(self.path):
            if name.endswith(".tmp") and name.startswith(TEMP_PREFIXES):
                with contextlib.suppress(OSError):
                    os.remove(self.file(name))


def _try_flock(fd: int) -> bool:
    try:
        import fcntl  # noqa: PLC0415 (POSIX only)
    except ImportError:  # Windows: no advisory locks; a second writer is not detected there
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _describe_holder(path: str) -> str:
    try:
        with open(path) as f:
            holder = json.loads(f.read() or "{}")
        return f"pid {holder['pid']} on {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it is just starting"


def read_run_config(out) -> tuple[dict | None, str | None]:
    """The settings of the run in ``out``: from ``checkpoint.npz``, else ``config.json``.

    Returns:
        ``(settings, path they came from)``, or ``(None, None)`` when the folder holds neither.

    Raises:
        RunDirError: the file exists but cannot be read (the message names it and what to do).
    """
    ckpt, config = os.path.join(out, CHECKPOINT), os.path.join(out, CONFIG)
    if os.path.isfile(ckpt):
        try:
            meta = read_checkpoint_meta(ckpt)
        except ValueError as exc:
            raise unreadable_checkpoint(exc) from None
        if not isinstance(meta.get("config"), dict):
            raise unreadable_checkpoint(ValueError(f"{ckpt}: holds no run settings"))
        return dict(meta["config"]), ckpt
    if os.path.isfile(config):
        return read_config_json(config), config
    return None, None


def unreadable_checkpoint(exc: Exception) -> RunDirError:
    """The error for a damaged ``checkpoint.npz`` (``exc`` names the file), with what to do."""
    return RunDirError(f"{exc}; it cannot be resumed (a truncated copy?). Restore it from a backup, or start "
                       "the run again with --overwrite (which moves the old files aside)")


def read_config_json(path) -> dict:
    """Read a run's ``config.json``.

    Raises:
        RunDirError: unreadable, not JSON, or not an object; the message names the file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, UnicodeDecodeError) as exc:
        raise RunDirError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          "restore it, or pass the settings as flags") from None
    if not isinstance(values, dict):
        raise RunDirError(f"{path} holds a JSON {type(values).__name__}, expected an object of settings")
    return values


def read_folder_config(folder) -> dict:
    """The ``config.json`` in ``folder``, or ``{}`` when there is none (see :func:`read_config_json`)."""
    path = os.path.join(folder, CONFIG)
    return read_config_json(path) if os.path.isfile(path) else {}
