"""Run the minires CLI under test conditions (started by tests through mpiexec).

Environment:
    MINIRES_TEST_MODEL: ``tiny`` (conv + BN + linear, tests/train/tiny.py) or ``resnet8`` (a CIFAR
        ResNet with one basic block per stage: residual blocks and option-A shortcuts).
    MINIRES_TEST_PIDDIR: each rank writes its pid to ``rank<r>.pid`` there.
    MINIRES_TEST_RAISE: ``RANK:STEP``: that rank raises RuntimeError in that training step.
    MINIRES_TEST_FINGERPRINT: ``RANK``: that rank pretends to run other minires code.
    MINIRES_TEST_STEP_SLEEP: seconds every rank sleeps before each training step (so that a test
        can kill a run in the middle on any machine).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import minires.distributed as distributed  # noqa: E402
import minires.distributed.data_parallel as data_parallel  # noqa: E402
import minires.train.trainer as trainer  # noqa: E402
from minires.cli import main  # noqa: E402
from minires.distributed.world import launcher_rank  # noqa: E402

from models import BUILDERS  # noqa: E402

rank = launcher_rank()
trainer.build_model = BUILDERS[os.environ.get("MINIRES_TEST_MODEL", "tiny")]
if os.environ.get("MINIRES_TEST_PIDDIR"):
    with open(os.path.join(os.environ["MINIRES_TEST_PIDDIR"], f"rank{rank}.pid"), "w") as f:
        f.write(str(os.getpid()))
if os.environ.get("MINIRES_TEST_RAISE") or os.environ.get("MINIRES_TEST_STEP_SLEEP"):
    bad_rank, bad_step = map(int, os.environ.get("MINIRES_TEST_RAISE", "-1:-1").split(":"))
    pause = float(os.environ.get("MINIRES_TEST_STEP_SLEEP", "0"))
    original = trainer.Trainer._train_step

    def step_under_test(self, x, y, batch):
        time.sleep(pause)
        if rank == bad_rank and self.step == bad_step:
            raise RuntimeError(f"injected failure on rank {rank}")
        return original(self, x, y, batch)

    trainer.Trainer._train_step = step_under_test
if os.environ.get("MINIRES_TEST_FINGERPRINT") == str(rank):
    data_parallel.code_fingerprint = lambda: "other code"
    distributed.code_fingerprint = data_parallel.code_fingerprint

sys.exit(main(sys.argv[1:]))
