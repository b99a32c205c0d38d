"""Run the minires CLI with a tiny test model (for the subprocess SIGKILL test).

``MINIRES_TEST_MODEL=residual`` picks the tiny ResNet (two blocks), otherwise the
block-free tiny model.
"""

import os
import sys

import minires.train.trainer as trainer
from minires.cli import main

from tiny import tiny_model, tiny_residual_model  # noqa: E402  (run with tests/train on sys.path)

trainer.build_model = tiny_residual_model if os.environ.get("MINIRES_TEST_MODEL") == "residual" else tiny_model
sys.exit(main(sys.argv[1:]))
