"""Scenarios on a small private tmpfs: a disk that fills up, a file system that turns read-only.

The test side (:func:`run_scenario`) starts ``unshare -rm python tmpfs.py SCENARIO SPEC``: a
new user and mount namespace where the test may mount a tmpfs without touching the host's
mounts (it disappears with the namespace). The namespace side (``__main__``) mounts it,
runs the scenario with ``driver.py`` (the CLI with the tiny model), copies what it wants to
show into the test's folder, and prints a JSON report as its last line. Where the machine
allows no such namespace, the test is skipped with the reason.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cli_env(**extra):
    """The environment for ``driver.py``: tests/train importable, one thread."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.update(extra)
    return env


def cli(args, timeout=300, **env):
    """Run ``driver.py ARGS`` to the end: ``(returncode, output)``."""
    proc = subprocess.run([sys.executable, os.path.join(HERE, "driver.py"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=cli_env(**env), timeout=timeout)
    return proc.returncode, proc.stdout.decode()


def run_scenario(name: str, spec: dict, timeout: float = 300) -> dict:
    """Run scenario ``name`` in a private mount namespace; skip the test where that is impossible."""
    import pytest  # noqa: PLC0415

    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux `unshare` to mount a private tmpfs")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a user+mount namespace to mount a tmpfs (`unshare -rm`: {probe.stderr.strip()})")
    proc = subprocess.run(["unshare", "-rm", sys.executable, os.path.abspath(__file__), name, json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, env=cli_env())
    lines = proc.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
    assert report is not None, f"scenario {name} failed:\n{proc.stdout}\n{proc.stderr}"
    if report.get("skip"):
        pytest.skip(report["skip"])
    return report


def _mount_tmpfs(path: str, size: str) -> str | None:
    os.makedirs(path, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True,
                          text=True)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs in the namespace: {proc.stderr.strip()}"


def _fill(folder: str) -> None:
    """Write zeros into ``folder/filler`` until the file system is full."""
    with open(os.path.join(folder, "filler"), "wb", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while True:
                f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def wait_for(path: str, proc, seconds: float = 120) -> None:
    """Wait until ``path`` exists, while process ``proc`` is alive."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path} never appeared: {proc.communicate()[0].decode()}")
        time.sleep(0.01)


def wait_for_checkpoint_of_step(run: str, step: int, proc, seconds: float = 120) -> None:
    """Wait until ``run/checkpoint.npz`` holds the state after global step ``step`` of process ``proc``."""
    from minires.train.checkpoint import read_checkpoint_meta  # noqa: PLC0415

    wait_for(os.path.join(run, "config.json"), proc, seconds)
    with open(os.path.join(run, "config.json")) as f:
        steps_per_epoch = json.load(f)["steps_per_epoch"]
    deadline = time.monotonic() + seconds
    while True:
        if os.path.exists(os.path.join(run, "checkpoint.npz")):
            meta = read_checkpoint_meta(os.path.join(run, "checkpoint.npz"))
            if meta["epoch"] * steps_per_epoch + meta["step"] == step:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the run never saved step {step}: {proc.communicate()[0].decode()}")
        time.sleep(0.01)


def disk_full(spec: dict) -> dict:
    """Train, fill the disk before step ``hold``, let the run fail; free the space, ``--resume``."""
    mount = os.path.join(spec["work"], "mnt")
    problem = _mount_tmpfs(mount, "4m")
    if problem:
        return {"skip": problem}
    run, release = os.path.join(mount, "run"), os.path.join(spec["work"], "release")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "driver.py"), *spec["args"], "--out", run],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=cli_env(MINIRES_TEST_HOLD=f"{spec['hold']}:{release}"))
    wait_for_checkpoint_of_step(run, spec["hold"] - 1, proc)  # the run now waits before step `hold`
    _fill(mount)
    open(release, "w").close()
    output = proc.communicate(timeout=300)[0].decode()
    shutil.copytree(run, os.path.join(spec["work"], "full"))
    os.remove(os.path.join(mount, "filler"))
    resume_code, resume_output = cli(["train", "--out", run, "--resume", "--no-progress", "--no-plot"])
    shutil.copytree(run, os.path.join(spec["work"], "resumed"))
    return {"code": proc.returncode, "output": output, "resume_code": resume_code, "resume_output": resume_output}


def read_only(spec: dict) -> dict:
    """A finished run on a file system that then becomes read-only: resume it, start another."""
    mount = os.path.join(spec["work"], "mnt")
    problem = _mount_tmpfs(mount, "4m")
    if problem:
        return {"skip": problem}
    run = os.path.join(mount, "run")
    first = cli([*spec["args"], "--out", run])
    shutil.copytree(run, os.path.join(spec["work"], "before"))
    remount = subprocess.run(["mount", "-o", "remount,ro", mount], capture_output=True, text=True)
    if remount.returncode != 0:
        return {"skip": f"cannot remount the tmpfs read-only: {remount.stderr.strip()}"}
    resumed = cli(["train", "--out", run, "--resume", "--no-progress", "--no-plot"])
    other = cli([*spec["args"], "--out", os.path.join(mount, "other")])
    shutil.copytree(run, os.path.join(spec["work"], "after"))
    return {"first": first, "resumed": resumed, "other": other, "mount": mount}


if __name__ == "__main__":
    scenario = {"disk_full": disk_full, "read_only": read_only}[sys.argv[1]]
    print(json.dumps(scenario(json.loads(sys.argv[2]))))
