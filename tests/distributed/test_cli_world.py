"""The CLI's world detection: a lone process never imports mpi4py; a launched one without it says what to install."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _python(code, env_extra=None, pythonpath=()):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_"))}
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, HERE, env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=300, capture_output=True, text=True)


def test_lone_training_run_never_imports_mpi4py(tmp_path):
    code = ("import sys\n"
            "import minires.train.trainer as trainer\n"
            "from models import tiny_model\n"
            "trainer.build_model = tiny_model\n"
            "from minires.cli import main\n"
            f"rc = main(['train', '--data', 'embedded', '--train-subset', '32', '--test-subset', '16', '--epochs', '1',"
            f" '--batch-size', '16', '--no-progress', '--no-plot', '--out', {str(tmp_path / 'run')!r}])\n"
            "assert rc == 0 and 'mpi4py' not in sys.modules, (rc, [m for m in sys.modules if 'mpi' in m])\n"
            "print('lone ok')")
    out = _python(code)
    assert out.returncode == 0 and "lone ok" in out.stdout, out.stdout + out.stderr
    assert "rank" not in out.stdout  # no data-parallel note for a lone process


def test_launched_without_mpi4py_says_what_to_install(tmp_path):
    fake = tmp_path / "fake" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named mpi4py')\n")
    out = _python("from minires.cli import main; raise SystemExit(main(['models', 'resnet20']))",
                  {"PMI_SIZE": "2", "PMI_RANK": "1"}, pythonpath=[str(tmp_path / "fake")])
    assert out.returncode == 2, out.stdout + out.stderr
    assert "minires: error: minires distributed needs mpi4py" in out.stderr
    assert "pip install 'minires[mpi]'" in out.stderr
