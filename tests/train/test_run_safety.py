"""A run's outputs are never lost or corrupted (issue 12), with the tiny model in this process.

Each test is one way a careless or unlucky user used to lose a run: training again into a
finished run's folder, ``--resume`` without a checkpoint, a torn ``metrics.jsonl``, NaN or
inf in the running statistics or the optimizer state, a damaged checkpoint, empty splits.
"""

import errno
import json
import os

import numpy as np
import pytest

from minires.io import load_state_dict
from minires.train import NonFiniteLossError, RunDirError, TrainingError, Trainer, load_checkpoint, save_checkpoint

from tests.helpers import without_timings

from .test_trainer import _config, _interrupt_after, _poison_after_step, _poison_weights_after_step, _quiet
from .tiny import use_tiny_model


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    use_tiny_model(monkeypatch)


def _files(folder):
    return {n: (folder / n).read_bytes() for n in os.listdir(folder) if (folder / n).is_file() and n[0] != "."}


def test_a_finished_run_is_never_replaced_without_a_word(tmp_path):
    """Case 1: checkpoint.npz deleted to save space, then `train` again into the same folder."""
    Trainer(_config(tmp_path, epochs=1), log=_quiet).fit()
    os.remove(tmp_path / "checkpoint.npz")
    before = _files(tmp_path)
    with pytest.raises(RunDirError, match=r"already holds a run \(config.json, metrics.jsonl, model.npz, "
                                          r"curves.png\); pass --resume .* --overwrite"):
        Trainer(_config(tmp_path, epochs=1, lr=0.05), log=_quiet).fit()
    assert _files(tmp_path) == before
    lines = []
    Trainer(_config(tmp_path, epochs=1, lr=0.05), log=lines.append).fit(overwrite=True)
    (previous,) = [n for n in os.listdir(tmp_path) if n.startswith("previous-")]
    assert _files(tmp_path / previous) == before  # moved aside byte for byte, never deleted
    assert any(previous in line and "--overwrite: moved" in line for line in lines)
    assert json.load(open(tmp_path / "config.json"))["lr"] == 0.05


def test_resume_without_checkpoint_reruns_the_same_run(tmp_path):
    """Case 2: the run starts again with its own settings; the result equals the first run's."""
    first = Trainer(_config(tmp_path), log=_quiet)
    first.fit()
    weights = load_state_dict(tmp_path / "model.npz")
    os.remove(tmp_path / "checkpoint.npz")
    lines = []
    again = Trainer(_config(tmp_path), log=lines.append)
    assert again.fit(resume=True)["status"] == "done"
    assert any("no checkpoint.npz" in line and "settings of its config.json" in line for line in lines)
    assert without_timings(again.read_metrics()) == without_timings(first.read_metrics())
    for key, value in load_state_dict(tmp_path / "model.npz").items():
        assert value.tobytes() == weights[key].tobytes(), key
    (previous,) = [n for n in os.listdir(tmp_path) if n.startswith("previous-")]
    assert "model.npz" in os.listdir(tmp_path / previous)
    with pytest.raises(TrainingError, match=r"--lr: checkpoint 0.2, now 0.3"):
        Trainer(_config(tmp_path, lr=0.3), log=_quiet).fit(resume=True)
    os.remove(tmp_path / "checkpoint.npz")
    with pytest.raises(TrainingError, match=r"--lr: config.json 0.2, now 0.3\); .*start a new --out"):
        Trainer(_config(tmp_path, lr=0.3), log=_quiet).fit(resume=True)


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="--resume and --overwrite exclude each other"):
        Trainer(_config(tmp_path), log=_quiet).fit(resume=True, overwrite=True)


def test_second_trainer_on_a_locked_folder_is_refused(tmp_path):
    holder = Trainer(_config(tmp_path), log=_quiet)
    holder.setup()
    with pytest.raises(RunDirError, match=rf"in use by another minires run \(pid {os.getpid()} "):
        Trainer(_config(tmp_path, lr=0.02, seed=7), log=_quiet).fit()
    assert holder.fit()["status"] == "done"  # the refused one touched nothing
    assert json.load(open(tmp_path / "config.json"))["lr"] == 0.2
    Trainer(_config(tmp_path), log=_quiet).fit(resume=True)  # released when fit returned


def test_torn_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path):
    """Case 4: killed while appending the epoch-2 record; the resume writes it again, whole."""
    reference = Trainer(_config(tmp_path / "ref"), log=_quiet)
    reference.fit()
    run = Trainer(_config(tmp_path / "run"), log=_quiet)
    run.setup()
    _interrupt_after(run, 6)  # the last step of epoch 2: its evaluation and record still to come
    assert run.fit()["status"] == "interrupted"
    with open(tmp_path / "run" / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 2, "train_loss": 2.30, "train_a')  # what a kill mid-write leaves
    lines = []
    resumed = Trainer(_config(tmp_path / "run"), log=lines.append)
    assert resumed.fit(resume=True)["status"] == "done"
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and str(tmp_path / "run" / "metrics.jsonl") in warnings[0]
    assert without_timings(resumed.read_metrics()) == without_timings(reference.read_metrics())


def _running_var(trainer):
    return next(b for name, b in trainer.model.named_buffers() if name.endswith("running_var"))


@pytest.mark.parametrize("poison, message", [
    (lambda t: _running_var(t).data.__setitem__(0, np.inf), r"buffer 1.running_var became NaN/infinite at the end "
                                                             r"of epoch 1 \(it holds inf\)"),
    (lambda t: next(iter(t.optimizer.state.values()))["momentum_buffer"].__setitem__(0, np.nan),
     r"optimizer state 0.weight.momentum_buffer became NaN/infinite at the end of epoch 1 \(it holds NaN\)"),
])
def test_nonfinite_buffers_and_optimizer_state_are_never_saved(tmp_path, poison, message):
    """Case 5: the loss stays finite while a running variance (or a momentum buffer) is inf."""
    trainer = Trainer(_config(tmp_path, checkpoint_every=2), log=_quiet)
    _poison_after_step(trainer, 3, poison)
    with pytest.raises(NonFiniteLossError, match=message + r"; stopping without saving this state. The last good "
                                                           r"checkpoint is kept in .*checkpoint.npz \(epoch 1, step 2"):
        trainer.fit()
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (0, 2)
    assert all(np.isfinite(v).all() for v in arrays.values() if v.dtype.kind == "f")
    assert not (tmp_path / "model.npz").exists()


def test_nan_before_any_checkpoint_says_there_is_none(tmp_path):
    trainer = Trainer(_config(tmp_path, checkpoint_every=100), log=_quiet)
    _poison_weights_after_step(trainer, 1, np.nan)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1, step 2 .*No checkpoint was saved "
                                                 r"before this \(nothing to resume\)") as info:
        trainer.fit()
    assert "last good checkpoint" not in str(info.value)
    assert not (tmp_path / "checkpoint.npz").exists()


def test_final_weights_are_checked_too(tmp_path):
    """A run that ends with inf running statistics (the loss never noticed) writes no model.npz."""
    trainer = Trainer(_config(tmp_path, epochs=1, checkpoint_every=100), log=_quiet)
    trainer.setup()
    finish = trainer._finish_epoch

    def poisoned_finish(seconds):
        _running_var(trainer).data[...] = np.inf
        finish(seconds)

    trainer._finish_epoch = poisoned_finish
    with pytest.raises(NonFiniteLossError, match="buffer 1.running_var became NaN/infinite"):
        trainer.fit()
    assert not (tmp_path / "model.npz").exists() and not (tmp_path / "checkpoint.npz").exists()


def test_checkpoint_with_nonfinite_values_is_not_resumed(tmp_path):
    """A checkpoint an older minires saved with inf running statistics: refused, not diverging again."""
    trainer = Trainer(_config(tmp_path), log=_quiet)
    trainer.setup()
    _interrupt_after(trainer, 2)
    trainer.fit()
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    arrays["model/1.running_var"][:] = np.inf
    save_checkpoint(tmp_path / "checkpoint.npz", arrays, meta)
    with pytest.raises(NonFiniteLossError, match=r"checkpoint.npz holds NaN/infinite values \(model/1.running_var; "
                                                 r".*cannot be resumed: start again with --overwrite"):
        Trainer(_config(tmp_path), log=_quiet).fit(resume=True)


def test_damaged_checkpoint_names_the_file_and_what_to_do(tmp_path):
    trainer = Trainer(_config(tmp_path), log=_quiet)
    trainer.setup()
    _interrupt_after(trainer, 2)
    trainer.fit()
    data = (tmp_path / "checkpoint.npz").read_bytes()
    (tmp_path / "checkpoint.npz").write_bytes(data[:5000])
    with pytest.raises(RunDirError, match=r"checkpoint.npz: not a readable checkpoint .*it cannot be resumed .*"
                                          r"--overwrite"):
        Trainer(_config(tmp_path), log=_quiet).fit(resume=True)


def test_model_npz_is_written_atomically(tmp_path, monkeypatch):
    """The disk fills while model.npz is rewritten: the old file stays whole, nothing half-written is left."""
    Trainer(_config(tmp_path, epochs=1), log=_quiet).fit()
    before = (tmp_path / "model.npz").read_bytes()
    import minires.io as io

    def write_then_fail(state, f):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_npz", write_then_fail)
    with pytest.raises(RunDirError, match=r"cannot write .*model.npz: No space left on device; the disk is full.*"
                                          r"--resume"):
        Trainer(_config(tmp_path, epochs=1), log=_quiet).fit(resume=True)
    assert (tmp_path / "model.npz").read_bytes() == before
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def _write_python_cifar(root, rng, empty):
    from tests.data.cifar_fixtures import _write, write_cifar10_python

    write_cifar10_python(root, rng, per_batch=8)
    folder = os.path.join(root, "cifar-10-batches-py")
    names = [f"data_batch_{i}" for i in range(1, 6)] if empty == "train" else ["test_batch"]
    for name in names:
        _write(os.path.join(folder, name), {b"batch_label": b"x", b"labels": [],
                                            b"data": np.zeros((0, 3072), np.uint8), b"filenames": []})


@pytest.mark.parametrize("empty", ["train", "test"])
def test_empty_splits_are_refused(tmp_path, rng, empty):
    """Case 8: no "test accuracy 0.00%" and no "total_steps must be a positive int"."""
    _write_python_cifar(tmp_path / "data", rng, empty)
    config = _config(tmp_path / "run", data=str(tmp_path / "data"), train_subset=0, test_subset=0)
    word = "training" if empty == "train" else "test"
    with pytest.raises(TrainingError, match=rf"--data .*data: the {word} split of .* has no images; .*point --data at "
                                            "a complete dataset"):
        Trainer(config, log=_quiet).fit()


def test_fit_again_takes_the_lock_again(tmp_path):
    trainer = Trainer(_config(tmp_path), log=_quiet)
    trainer.setup()
    _interrupt_after(trainer, 2)
    assert trainer.fit()["status"] == "interrupted" and not trainer.run_dir.locked
    other = Trainer(_config(tmp_path), log=_quiet)
    other.setup(resume=True)  # the folder is free between the two fit() calls
    with pytest.raises(RunDirError, match="in use by another minires run"):
        trainer.fit()
    other.close()
    trainer._stop_requested = False
    assert trainer.fit()["status"] == "done"
