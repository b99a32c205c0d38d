"""Trainer GPU bookkeeping (device-side loss/accuracy sums, deferred NaN check), exercised with NumPy scalars.

(A separate file from tests/gpu, whose tests are all skipped without a GPU.)
"""

import numpy as np
import pytest

from minires.train import TrainConfig
from minires.train.trainer import NonFiniteLossError, Trainer


def _config(tmp_path):
    return TrainConfig(model="resnet20", data="embedded", epochs=1, batch_size=32, train_subset=128,
                       test_subset=100, device="cpu", out=str(tmp_path / "run"), progress=False, plot=False)


def test_device_accumulation_flushes_sums_and_reports_nan(tmp_path):
    """The GPU bookkeeping is array-module generic; NumPy 0-d arrays stand in for device scalars here."""
    trainer = Trainer(_config(tmp_path))
    trainer.epoch, trainer.step = 0, 0
    trainer.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    trainer.optimizer = type("Opt", (), {"param_groups": [{"lr": 0.1}]})()
    # (the step passes the summed loss: mean loss times examples, in float64)
    trainer._accumulate_device(np.float64(2.0 * 8).reshape(()), np.int64(3).reshape(()), 8)
    trainer._accumulate_device(np.float64(1.0 * 4).reshape(()), np.int64(5).reshape(()), 4)
    assert trainer._flush_device_metrics() is True
    assert trainer.partial["loss_sum"] == pytest.approx(2.0 * 8 + 1.0 * 4)
    assert trainer.partial["correct"] == 8 and trainer.partial["seen"] == 12
    assert trainer._flush_device_metrics() is False  # nothing pending
    trainer._accumulate_device(np.float64(np.nan).reshape(()), np.int64(0).reshape(()), 8)
    with pytest.raises(NonFiniteLossError, match="within steps"):
        trainer._flush_device_metrics()
