"""Evaluation in eval mode, and the epoch table printed by the trainer."""

from __future__ import annotations

from .. import functional as F
from ..autograd import Tensor, no_grad
from ..backend import get_array_module


def evaluate_batches(model, loader, steps=None) -> list[tuple[int, float, int, int]]:
    """Evaluate ``model`` batch by batch in eval mode without gradients.

    The model's train/eval mode is restored afterwards.

    Args:
        model: the model.
        loader: the :class:`~minires.data.loader.Loader` of the split.
        steps: only these batches (a data-parallel rank's share); default all.

    Returns:
        One ``(batch index, summed cross-entropy, number correct, examples)`` per batch.
    """
    was_training = getattr(model, "training", True)
    model.eval()
    rows = []
    try:
        with no_grad():
            for step, x, y in loader.epoch(0, steps=steps):
                logits = model(Tensor(x))
                loss_sum = float(F.cross_entropy(logits, Tensor(y)).item()) * len(y)
                rows.append((step, loss_sum, int(count_hits(logits, y)), len(y)))
    finally:
        model.train(was_training)
    return rows


def count_hits(logits, y):
    """How many rows of ``logits`` have their largest value at the label in ``y`` (an array scalar)."""
    xp = get_array_module(logits.data)
    return xp.sum(xp.argmax(logits.data, axis=1) == y)


def sum_batches(rows) -> tuple[float, int, int]:
    """``(mean cross-entropy, correct, examples)`` of :func:`evaluate_batches` rows, added in row order."""
    loss_sum, correct, seen = 0.0, 0, 0
    for _, batch_loss, batch_correct, batch_seen in rows:
        loss_sum += batch_loss
        correct += batch_correct
        seen += batch_seen
    return loss_sum / max(seen, 1), correct, seen


def evaluate_model(model, loader) -> tuple[float, int, int]:
    """Evaluate ``model`` on every batch of ``loader`` in eval mode without gradients.

    The model's train/eval mode is restored afterwards.

    Returns:
        ``(mean cross-entropy, number correct, number of examples)``.
    """
    return sum_batches(evaluate_batches(model, loader))


def table_header() -> str:
    """The header line of the epoch table."""
    return f"{'epoch':>5} {'train loss':>10} {'train acc':>9} {'test loss':>9} {'test acc':>8} {'lr':>9} {'time':>8}"


def table_row(r: dict) -> str:
    """One epoch record of ``metrics.jsonl`` as a row of the epoch table."""
    return (f"{r['epoch']:>5} {r['train_loss']:>10.4f} {r['train_acc'] * 100:>8.2f}% {r['test_loss']:>9.4f} "
            f"{r['test_acc'] * 100:>7.2f}% {r['lr']:>9.4g} {r['seconds']:>7.1f}s")
