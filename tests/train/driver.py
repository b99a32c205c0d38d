"""Run the minires CLI with the tiny test model (for the subprocess tests).

``MINIRES_TEST_HOLD=STEP:PATH`` makes the run wait before its STEP-th training step (counted
from 1 in this process) until the file PATH exists: a test can act (start a second run, fill
the disk) at a known moment, with the output folder locked and the earlier steps saved.

``MINIRES_TEST_MODEL=residual`` picks the tiny ResNet (two blocks), otherwise the
block-free tiny model.

``MINIRES_TEST_STEP_SLEEP=SECONDS`` sleeps before every training step, so that a test can
kill a run in its middle however fast the machine (or however slow the test process) is.
"""

import os
import sys
import time

import minires.train.trainer as trainer
from minires.cli import main

from tiny import tiny_model, tiny_residual_model  # noqa: E402  (run with tests/train on sys.path)

trainer.build_model = tiny_residual_model if os.environ.get("MINIRES_TEST_MODEL") == "residual" else tiny_model


def _hold_before_step(step: int, path: str) -> None:
    original = trainer.Trainer._train_step
    calls = [0]

    def train_step(self, *args):
        calls[0] += 1
        if calls[0] == step:
            deadline = time.monotonic() + 120
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.01)
        return original(self, *args)

    trainer.Trainer._train_step = train_step


def _sleep_before_steps(pause: float) -> None:
    original = trainer.Trainer._train_step

    def train_step(self, *args):
        time.sleep(pause)
        return original(self, *args)

    trainer.Trainer._train_step = train_step


if os.environ.get("MINIRES_TEST_STEP_SLEEP"):
    _sleep_before_steps(float(os.environ["MINIRES_TEST_STEP_SLEEP"]))
if os.environ.get("MINIRES_TEST_HOLD"):
    hold_step, hold_path = os.environ["MINIRES_TEST_HOLD"].split(":", 1)
    _hold_before_step(int(hold_step), hold_path)
sys.exit(main(sys.argv[1:]))
