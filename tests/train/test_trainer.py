"""The training loop with a tiny model: outputs, schedule, exact resume, NaN stop, Ctrl-C."""

import json
import os
import signal

import numpy as np
import pytest

from minires.io import load_state_dict
from minires.optim import create_schedule
from minires.train import NonFiniteLossError, TrainConfig, Trainer, TrainingError, load_checkpoint
from tests.helpers import without_timings

from .tiny import use_tiny_model


@pytest.fixture(autouse=True)
def _tiny(monkeypatch):
    use_tiny_model(monkeypatch)


def _config(out, **kw):
    values = dict(model="resnet20", data="embedded", train_subset=96, test_subset=64, epochs=2, batch_size=32,
                  lr=0.2, schedule="linear", warmup_frac=0.25, momentum=0.9, nesterov=True, weight_decay=5e-4,
                  checkpoint_every=2, out=str(out), progress=False, eval_batch_size=50)
    values.update(kw)
    return TrainConfig(**values)


def _quiet(*args):
    pass


def test_run_writes_all_outputs(tmp_path):
    trainer = Trainer(_config(tmp_path), log=_quiet)
    result = trainer.fit()
    assert result["status"] == "done"
    names = set(os.listdir(tmp_path))
    assert {"config.json", "metrics.jsonl", "checkpoint.npz", "model.npz", "curves.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"} <= set(r)
        assert 0 < r["train_seconds"] <= r["seconds"]
        assert 0 <= r["test_acc"] <= 1 and np.isfinite(r["train_loss"])
    assert result["test_acc"] == records[-1]["test_acc"]
    config = json.load(open(tmp_path / "config.json"))
    assert config["steps_per_epoch"] == 3 and config["total_steps"] == 6 and config["lr"] == 0.2
    assert len(config["normalize_mean"]) == 3
    weights = load_state_dict(tmp_path / "model.npz")
    state = trainer.model.state_dict()
    assert set(weights) == set(state)
    for k in state:
        np.testing.assert_array_equal(weights[k], np.asarray(state[k].data if hasattr(state[k], "data") else state[k]))
    _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (2, 0)


def test_schedule_and_weight_decay_groups(tmp_path):
    trainer = Trainer(_config(tmp_path, epochs=3), log=_quiet)
    trainer.setup()
    groups = trainer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim <= 1 for p in groups[1]["params"])
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in groups)
    seen = []
    step = trainer.optimizer.step

    def recording_step(*args):
        seen.append([g["lr"] for g in trainer.optimizer.param_groups])
        return step(*args)

    trainer.optimizer.step = recording_step
    trainer.fit()
    schedule = create_schedule("linear", 0.2, 9, warmup_frac=0.25)
    assert [lrs[0] for lrs in seen] == [schedule(t) for t in range(9)]
    assert all(a == b for a, b in seen)
    assert seen[0][0] == 0.0 and max(s[0] for s in seen) == pytest.approx(0.2 * (1 - 0.75 * 0 / 1), rel=0.5)


def _interrupt_after(trainer, n_steps):
    """Make the trainer behave as if Ctrl-C arrived during its n-th step."""
    original = trainer._train_step
    count = [0]

    def step(*args):
        out = original(*args)
        count[0] += 1
        if count[0] == n_steps:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the trainer's handler
        return out

    trainer._train_step = step


@pytest.mark.parametrize("stop_at", [2, 3, 4])
def test_ctrl_c_then_resume_is_exact(tmp_path, stop_at):
    reference = Trainer(_config(tmp_path / "ref"), log=_quiet)
    reference.fit()

    first = Trainer(_config(tmp_path / "run"), log=_quiet)
    first.setup()
    _interrupt_after(first, stop_at)
    assert first.fit()["status"] == "interrupted"
    _, meta = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    # the position after the stop_at-th step (an epoch's last step leaves (epoch, 3): eval still to do)
    assert (meta["epoch"], meta["step"]) == ((stop_at - 1) // 3, (stop_at - 1) % 3 + 1)
    assert not (tmp_path / "run" / "model.npz").exists()

    resumed = Trainer(_config(tmp_path / "run"), log=_quiet)
    assert resumed.fit(resume=True)["status"] == "done"
    a = load_state_dict(tmp_path / "ref" / "model.npz")
    b = load_state_dict(tmp_path / "run" / "model.npz")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert without_timings(reference.read_metrics()) == without_timings(resumed.read_metrics())


def _poison_after_step(trainer, bad_step: int, poison) -> None:
    """Set up ``trainer`` and call ``poison(trainer)`` right after optimizer step ``bad_step``."""
    trainer.setup()
    step = trainer.optimizer.step
    calls = [0]

    def poisoning_step(*args):
        step(*args)
        calls[0] += 1
        if calls[0] == bad_step:
            poison(trainer)

    trainer.optimizer.step = poisoning_step


def _poison_weights_after_step(trainer, bad_step: int, value: float) -> None:
    """Set up ``trainer`` and make its first weight ``value`` right after optimizer step ``bad_step``."""
    _poison_after_step(trainer, bad_step,
                       lambda t: t.optimizer.param_groups[0]["params"][0].data.__setitem__(Ellipsis, value))


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = Trainer(_config(tmp_path, checkpoint_every=2), log=_quiet)
    _poison_weights_after_step(trainer, 3, np.nan)  # after the checkpoint of step 2, the weights go bad
    with pytest.raises(NonFiniteLossError, match="(loss is|loss became) nan.*last good checkpoint is kept"):
        trainer.fit()
    arrays, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert (meta["epoch"], meta["step"]) == (0, 2)
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("model/") and v.dtype.kind == "f")


def test_nonfinite_loss_mid_epoch(tmp_path):
    trainer = Trainer(_config(tmp_path, checkpoint_every=1, epochs=1), log=_quiet)
    _poison_weights_after_step(trainer, 1, np.inf)
    with pytest.raises(NonFiniteLossError, match="became NaN/infinite at epoch 1, step 1|loss became nan"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.npz").exists()  # no good state was ever reached
    assert not (tmp_path / "model.npz").exists()


def test_refuses_to_overwrite_and_mismatched_resume(tmp_path):
    Trainer(_config(tmp_path, epochs=1), log=_quiet).fit()
    with pytest.raises(TrainingError, match="already holds a run.*--resume"):
        Trainer(_config(tmp_path, epochs=1), log=_quiet).fit()
    with pytest.raises(TrainingError, match=r"--lr: checkpoint 0.2, now 0.3"):
        Trainer(_config(tmp_path, epochs=1, lr=0.3), log=_quiet).fit(resume=True)
    # resuming a finished run does no more training and keeps the result
    result = Trainer(_config(tmp_path, epochs=1), log=_quiet).fit(resume=True)
    assert result["status"] == "done" and len(result["history"]) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="batch-size must be an integer >= 1, got 0"):
        TrainConfig(batch_size=0).validate()
    with pytest.raises(ValueError, match="schedule must be one of paper, cosine, linear, got 'step'"):
        TrainConfig(schedule="step").validate()
    with pytest.raises(ValueError, match="momentum must be in"):
        TrainConfig(momentum=1.5).validate()
    with pytest.raises(ValueError, match="nesterov needs a momentum"):
        TrainConfig(momentum=0.0, nesterov=True).validate()
    assert TrainConfig.from_dict(TrainConfig(lr=0.3).to_dict() | {"unknown": 1}).lr == 0.3
