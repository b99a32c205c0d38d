"""Start ``mpiexec`` from tests: always with a timeout; every process it started is ended by pid.

The MPI tests skip (with the reason) only where mpi4py is not installed; with mpi4py and
no ``mpiexec`` they fail, since the ``mpi`` extra brings both.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "driver.py")
CHECKS = os.path.join(HERE, "mpi_checks.py")
LAUNCHER_VARIABLES = ("PMI_", "OMPI_", "MV2_", "HYDRA_", "MPI_LOCAL", "PMIX_")


def mpiexec() -> list:
    """The launcher command (``mpiexec`` beside this Python first), oversubscription allowed."""
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install -e '.[mpi]'); MPI tests skipped")
    path = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if path is None:
        pytest.fail("mpi4py is installed but no mpiexec was found beside python or on PATH; "
                    "pip install -e '.[mpi]' brings the mpich wheel's mpiexec")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    return [path, "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else [path]


def environment(**extra) -> dict:
    """The test process's environment without launcher variables, one kernel thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_VARIABLES)}
    env.update({"MINIRES_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _descendants(pid: int) -> list:
    """Every living descendant of ``pid`` (Linux /proc), children first."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                parents.setdefault(int(fields[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


TAG_VARIABLE = "MINIRES_TEST_LAUNCH"


def _tagged(tag: str) -> list:
    """Pids whose environment holds ``tag`` (``NAME=VALUE``)."""
    needle = tag.encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read() + b"\0":
                        found.append(int(entry))
            except OSError:
                continue
    return found


def _runs(pid: int, needles) -> bool:
    """Whether process ``pid`` still runs one of our commands (guards against a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(n in command for n in needles)


class Launch:
    """A running ``mpiexec`` (or plain python) command whose process tree is ended on exit."""

    def __init__(self, command, env):
        # a tag in the environment marks every process of this launch, even one that lost its parent
        self.tag = f"{TAG_VARIABLE}={uuid.uuid4().hex}"
        env = dict(env, **dict([self.tag.split("=", 1)]))
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self.needles = (next(c for c in command if c.endswith(".py")), "hydra_pmi_proxy", "mpiexec")
        self.started = time.time()
        self.known = set()

    def remember_tree(self) -> None:
        """Note the current descendants (ranks run in their own sessions, out of our process group)."""
        self.known.update(_descendants(self.proc.pid))

    def tagged(self) -> list:
        """The living processes started by this launch (found by the tag in their environment)."""
        return _tagged(self.tag)

    def wait(self, timeout: float) -> tuple:
        """``(exit status, output, seconds)``; ends everything and fails the test on a timeout."""
        self.remember_tree()
        try:
            output = self.proc.communicate(timeout=timeout)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            self.end()
            output = self.proc.communicate()[0].decode(errors="replace")
            pytest.fail(f"timed out after {timeout} s:\n{output[-3000:]}")
        self.end()
        return self.proc.returncode, output, time.time() - self.started

    def end(self) -> None:
        """SIGTERM to the launcher (Hydra passes it on), then SIGKILL to whatever of its tree is left."""
        self.remember_tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for pid in self.known | {self.proc.pid} | set(self.tagged()):
            if _runs(pid, self.needles):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.proc.wait()


def launch(ranks: int, script_args, env=None, script=DRIVER) -> Launch:
    """Start ``script`` under ``mpiexec -n ranks`` (``ranks=0``: plain python, no launcher)."""
    command = [sys.executable, script, *script_args]
    if ranks:
        command = mpiexec() + ["-n", str(ranks)] + command
    return Launch(command, env if env is not None else environment())


def run(ranks: int, script_args, timeout: float = 300, env=None, script=DRIVER) -> tuple:
    """Run to the end: ``(exit status, output, seconds)``."""
    return launch(ranks, script_args, env, script).wait(timeout)
