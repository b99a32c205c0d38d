"""Training curves as a PNG, when matplotlib is installed (it is optional)."""

from __future__ import annotations

from .checkpoint import atomic_write


def plot_curves(history: list, path: str) -> str | None:
    """Plot loss and accuracy per epoch from ``metrics.jsonl`` records.

    Args:
        history: the epoch records (``epoch``, ``train_loss``, ``test_loss``, ``train_acc``, ``test_acc``).
        path: where to write the PNG.

    Returns:
        ``path``, or ``None`` when matplotlib is missing or there is nothing to plot.
    """
    if not history:
        return None
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except Exception:  # matplotlib missing or unusable: the curves are optional
        return None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in history], "o-", label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["test_acc"] for r in history], "o-", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
