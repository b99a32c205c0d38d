#!/usr/bin/env python3
"""The minires CIFAR recipe written in PyTorch, for an accuracy comparison on the same data.

    python benchmarks/train_torch_reference.py --data /work/data --epochs 3 --batch-size 128 \\
        --lr 0.2 --schedule linear --warmup-frac 0.15 --momentum 0.9 --nesterov \\
        --weight-decay 5e-4 --seed 0 --out runs/torch-seed0

What is PyTorch here: the ResNet-20 (He et al. 2016, option-A shortcuts, He-normal fan-out
init, BN 1/0, default linear init), the forward/backward, ``torch.optim.SGD`` (momentum,
Nesterov, weight decay on conv/linear weights only) and the cross-entropy.

What is shared with minires, on purpose, so that only the engine differs: the CIFAR
reader, the data order and the augmentation (``minires.data.Loader``: pad-4 crop, flip,
normalisation with the training set's mean/std, seeded from (seed, epoch, step)), and the
learning-rate values (``minires.optim.create_schedule``, applied per step, the same
numbers a ``LambdaLR`` would give). With ``--init-from-minires`` the initial weights are
also minires's for the same seed (the state-dict names are the same).

Writes OUT/metrics.jsonl in the trainer's format (epoch, train_loss, train_acc, test_loss,
test_acc, lr, seconds) and OUT/config.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minires.data import Loader, channel_stats, load_dataset  # noqa: E402
from minires.optim import create_schedule  # noqa: E402


from tests.torch_reference import cifar_resnet as torch_cifar_resnet  # noqa: E402  (the tests' and benchmarks' one)


def cifar_resnet(depth: int, num_classes: int):
    """ResNet-``depth`` (option A) with He-normal fan-out conv init and BN weight 1, bias 0."""
    model = torch_cifar_resnet(depth, num_classes)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def evaluate(model, loader):
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    with torch.no_grad():
        for _, x, y in loader.epoch(0):
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
    model.train()
    return loss_sum / seen, correct / seen


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="embedded")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100"])
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--schedule", default="linear", choices=["paper", "cosine", "linear"])
    p.add_argument("--warmup-frac", type=float, default=0.15)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--train-subset", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing runs)")
    p.add_argument("--init-from-minires", action="store_true", help="start from minires's initial weights")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train, test = load_dataset(args.data, args.dataset)
    if args.train_subset:
        train.images, train.labels = train.images[:args.train_subset], train.labels[:args.train_subset]
    mean, std = channel_stats(train.images)
    train_loader = Loader(train, args.batch_size, mean, std, train=True, seed=args.seed)
    test_loader = Loader(test, 500, mean, std, train=False)
    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * args.epochs

    model = cifar_resnet(args.depth, train.num_classes)
    if args.init_from_minires:
        import minires
        from minires import models

        minires.manual_seed(args.seed)
        state = {k: torch.from_numpy(np.asarray(v.data if hasattr(v, "data") else v))
                 for k, v in models.create(f"resnet{args.depth}", num_classes=train.num_classes).state_dict().items()}
        model.load_state_dict(state, strict=True)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    options = {"warmup_frac": args.warmup_frac} if args.schedule != "paper" else {}
    schedule = create_schedule(args.schedule, args.lr, total, **options)

    config = dict(vars(args), framework=f"torch {torch.__version__}", threads_used=torch.get_num_threads(),
                  steps_per_epoch=steps_per_epoch, train_examples=len(train), test_examples=len(test))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    metrics = open(os.path.join(args.out, "metrics.jsonl"), "w")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(train)} train images, "
          f"{steps_per_epoch} steps/epoch x {args.epochs}")
    step_global, start_all = 0, time.time()
    for epoch in range(args.epochs):
        start = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        for step, x, y in train_loader.epoch(epoch):
            lr = schedule(step_global)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = torch.from_numpy(x), torch.from_numpy(y)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            step_global += 1
            if step % 50 == 0:
                print(f"  epoch {epoch + 1} step {step}/{steps_per_epoch} loss {loss_sum / seen:.3f} "
                      f"acc {correct / seen:.3f} lr {lr:.4f} {seen / (time.time() - start):.0f} img/s", flush=True)
            if args.max_steps and step_global >= args.max_steps:
                break
        train_seconds = time.time() - start
        test_loss, test_acc = evaluate(model, test_loader)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                  "test_loss": test_loss, "test_acc": test_acc, "lr": schedule(step_global),
                  "seconds": round(time.time() - start, 3), "train_seconds": round(train_seconds, 3),
                  "images_per_s": round(seen / train_seconds, 1)}
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        print(json.dumps(record), flush=True)
        if args.max_steps and step_global >= args.max_steps:
            break
    print(f"total {time.time() - start_all:.1f}s; final test accuracy {record['test_acc'] * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
