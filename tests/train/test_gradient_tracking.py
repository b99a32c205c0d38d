"""--track-gradients in the trainer: gradients.jsonl, unchanged training, exact resume (tiny ResNet)."""

import numpy as np
import pytest

import minires as mr
from minires import analysis
from minires.io import load_state_dict
from minires.train import TrainConfig, Trainer
from minires.train.jsonl import read_jsonl

from tests.helpers import without_timings

from .test_trainer import _config, _interrupt_after, _quiet
from .tiny import tiny_residual_model


@pytest.fixture(autouse=True)
def _tiny_resnet(monkeypatch):
    import minires.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", tiny_residual_model)


def _gradients(out):
    return read_jsonl(str(out / "gradients.jsonl"))


def test_records_every_n_steps_without_changing_training(tmp_path):
    plain = Trainer(_config(tmp_path / "off"), log=_quiet)
    plain.fit()
    assert not (tmp_path / "off" / "gradients.jsonl").exists()
    tracked = Trainer(_config(tmp_path / "on", track_gradients=2), log=_quiet)
    tracked.fit()
    records = _gradients(tmp_path / "on")
    assert [(r["step"], r["epoch"]) for r in records] == [(0, 1), (2, 1), (4, 2)]  # 2 epochs x 3 steps
    names = [n for n, _ in tracked.model.named_parameters()]
    for r in records:
        assert [b["name"] for b in r["blocks"]] == ["layer1.0", "layer2.0"]
        assert all(b["skip"] > 0 and b["branch"] > 0 and b["sum"] > 0 and b["ratio"] > 0 for b in r["blocks"])
        assert [p["name"] for p in r["params"]] == names
        assert all(p["grad_norm"] > 0 and p["weight_norm"] >= 0 for p in r["params"])
        assert np.isfinite(r["loss"]) and r["lr"] >= 0
    a = load_state_dict(tmp_path / "off" / "model.npz")
    b = load_state_dict(tmp_path / "on" / "model.npz")
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert without_timings(plain.read_metrics()) == without_timings(tracked.read_metrics())


def test_first_record_is_the_trace_of_the_first_batch(tmp_path):
    trainer = Trainer(_config(tmp_path, track_gradients=3, epochs=1), log=_quiet)
    trainer.setup()
    _, x, y = next(iter(trainer.train_loader.epoch(0)))
    trainer.model.train()
    records = analysis.trace_residual_stream(trainer.model, mr.Tensor(x), mr.Tensor(y), keep_tensors=False)
    trainer.fit()
    first = _gradients(tmp_path)[0]["blocks"]
    for r, b in zip(records, first):  # float32 training: agreement to float32 rounding
        assert b["skip"] == pytest.approx(r.norms["skip"], rel=1e-5)
        assert b["branch"] == pytest.approx(r.norms["branch"], rel=1e-4)
        assert b["sum"] == pytest.approx(r.norms["grad_in"], rel=1e-5)


@pytest.mark.parametrize("stop_at", [2, 4])
def test_interrupt_and_resume_give_the_same_file(tmp_path, stop_at):
    Trainer(_config(tmp_path / "ref", track_gradients=1), log=_quiet).fit()
    first = Trainer(_config(tmp_path / "run", track_gradients=1, checkpoint_every=100), log=_quiet)
    first.setup()
    _interrupt_after(first, stop_at)
    assert first.fit()["status"] == "interrupted"
    # what a kill during the next append leaves: a record past the checkpoint and a torn line
    path = tmp_path / "run" / "gradients.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines) + lines[-1].replace('"step": %d' % (stop_at - 1), '"step": %d' % stop_at)
                    + lines[-1][:50])
    Trainer(_config(tmp_path / "run", track_gradients=1, checkpoint_every=100), log=_quiet).fit(resume=True)
    assert path.read_bytes() == (tmp_path / "ref" / "gradients.jsonl").read_bytes()
    assert [r["step"] for r in _gradients(tmp_path / "run")] == list(range(6))


def test_track_gradients_is_validated():
    with pytest.raises(ValueError, match="track-gradients must be an integer >= 0, got -1"):
        TrainConfig(track_gradients=-1).validate()
