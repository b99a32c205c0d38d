"""The degradation experiment at full size on a GPU (He et al. 2015, Fig. 6 left).

plain-20/56 and ResNet-20/56 on all of CIFAR-10 with the paper's recipe: batch 128,
SGD lr 0.1 (divided by 10 at 50% and 75% of training; the paper's 32k/48k of 64k
iterations), momentum 0.9, weight decay 1e-4, crop+flip augmentation, 164 epochs. Same
outputs as ``benchmarks/degradation.py`` (``degradation_gpu.csv/.md/.png``); any of its
options can be passed to override these defaults, e.g. ``--epochs 20 --time-budget 600``.

Usage::

    python benchmarks/degradation_gpu.py --data /path/to/cifar-10-batches-py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import degradation  # noqa: E402

FULL = ["--device", "cuda", "--train-subset", "0", "--test-subset", "0", "--epochs", "164", "--batch-size", "128",
        "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4", "--schedule", "paper", "--warmup-steps", "0",
        "--logs-per-epoch", "1", "--tag", "degradation_gpu"]

if __name__ == "__main__":
    degradation.main(FULL + sys.argv[1:])
