"""Run the minires CLI with the tiny test model (for the subprocess SIGKILL test)."""

import sys

import minires.train.trainer as trainer
from minires.cli import main

from tiny import tiny_model  # noqa: E402  (run with tests/train on sys.path)

trainer.build_model = tiny_model
sys.exit(main(sys.argv[1:]))
