"""Building the model, optimizer and LR schedule of a run from its configuration."""

from __future__ import annotations

from .config import TrainConfig
from .errors import TrainingError


def build_model(config: TrainConfig, num_classes: int):
    """Create ``config.model`` from the registry with ``num_classes`` (and ``shortcut`` when set).

    Raises:
        ValueError: the name is not in ``minires.models.available()``.
    """
    from .. import models  # noqa: PLC0415

    shortcut = {} if config.shortcut is None else {"shortcut": config.shortcut}
    return models.create(config.model, num_classes=num_classes, **shortcut)


def check_splits(train_set, test_set, data) -> None:
    """Refuse an empty training or test split (training evaluates the test split after every epoch).

    Raises:
        TrainingError: names ``--data`` and the empty split.
    """
    for split, what in ((train_set, "training"), (test_set, "test")):
        if len(split) == 0:
            raise TrainingError(
                f"--data {data or '(searched)'}: the {what} split of {split.name} has no images; training needs "
                "both splits (the test split is evaluated after every epoch): point --data at a complete dataset")


def count_parameters(model) -> int:
    """Number of trainable scalars."""
    return int(sum(p.data.size for p in model.parameters() if p.requires_grad))


def build_optimizer(model, config: TrainConfig, total_steps: int):
    """SGD with weight decay on conv/linear weights only, and the configured per-step schedule.

    Returns:
        ``(optimizer, scheduler)``; call ``scheduler.step()`` after each ``optimizer.step()``.
    """
    from .. import optim  # noqa: PLC0415

    groups = optim.param_groups_weight_decay(model, config.weight_decay)
    optimizer = optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
    return optimizer, optim.LRScheduler(optimizer, build_schedule(config, total_steps))


def build_schedule(config: TrainConfig, total_steps: int):
    """The ``minires.optim`` schedule named by ``config.schedule`` over ``total_steps`` updates.

    ``paper`` with ``paper_warmup`` starts with 400 steps at ``lr / 10`` (0.01 for lr 0.1, as
    He et al. for ResNet-110/1202); ``cosine`` and ``linear`` warm up over ``warmup_frac``.
    """
    from .. import optim  # noqa: PLC0415

    if config.schedule == "paper":
        options = {"warmup_steps": min(400, total_steps) if config.paper_warmup else 0,
                   "warmup_lr": config.lr / 10}
    else:
        options = {"warmup_frac": config.warmup_frac}
    return optim.create_schedule(config.schedule, config.lr, total_steps, **options)
