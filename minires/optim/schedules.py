"""Learning-rate schedules as functions of the optimiser step, and a scheduler that applies them.

A schedule is a callable ``schedule(step) -> lr`` for ``step = 0, 1, ..., total_steps - 1``
(the learning rate used by the update number ``step``; steps at or past ``total_steps``
keep the final value). Schedules hold no state, so the same object can drive a PyTorch
``LambdaLR`` for a side-by-side comparison. :class:`LRScheduler` owns the step counter,
writes ``group['lr']`` of an optimiser, and saves and restores its counter.

- ``paper``  (:class:`PaperSchedule`): He et al. 2016 (CIFAR): ``lr``, divided by 10 at
  50% and again at 75% of the steps (32k and 48k of 64k), with an optional warm-up at a
  small constant rate (0.01 for the first 400 steps for ResNet-110/1202).
- ``cosine`` (:class:`CosineSchedule`): ``lr * (1 + cos(pi * t / T)) / 2``, after an
  optional linear warm-up.
- ``linear`` (:class:`LinearSchedule`): linear warm-up from 0 to ``lr`` over
  ``warmup_frac`` of the steps, then linear decay to 0 at ``total_steps``.
"""

from __future__ import annotations

import math

import numpy as np


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_lr(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def _check_frac(name: str, value) -> float:
    value = _check_lr(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class Schedule:
    """Base class: ``schedule(step)`` gives the learning rate of update ``step``.

    Args:
        base_lr: the peak (nominal) learning rate, the ``--lr`` of the command line.
        total_steps: the number of optimiser updates in the run.
    """

    name = "constant"

    def __init__(self, base_lr: float, total_steps: int):
        self.base_lr = _check_lr("base_lr", base_lr)
        self.total_steps = _check_positive_int("total_steps", total_steps)

    def factor(self, step: int) -> float:
        """The learning rate of ``step`` as a multiple of ``base_lr``."""
        return 1.0

    def _check_step(self, step) -> int:
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
            raise TypeError(f"step must be an int, got {type(step).__name__}")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return int(step)

    def __call__(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based)."""
        return self.base_lr * self.factor(self._check_step(step))

    def config(self) -> dict:
        """The constructor arguments (JSON-able), with the schedule's ``name``."""
        return {"name": self.name, "base_lr": self.base_lr, "total_steps": self.total_steps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    """The same learning rate at every step."""


class PaperSchedule(Schedule):
    """He et al. (2016) step schedule: divide by 10 at 50% and 75% of training.

    ``lr(t) = base_lr * gamma ** (number of milestones <= t)`` with milestones
    ``int(f * total_steps)`` for ``f`` in ``milestone_fracs``; during the first
    ``warmup_steps`` steps the rate is ``warmup_lr`` instead. For 64,000 steps the
    drops are at 32,000 and 48,000, as in the paper.

    Args:
        base_lr: the initial learning rate (0.1 in the paper).
        total_steps: number of updates in the run.
        warmup_steps: steps at ``warmup_lr`` first (400 in the paper for ResNet-110/1202; 0 = off).
        warmup_lr: the warm-up rate (0.01 in the paper).
        milestone_fracs: where the drops happen, as fractions of ``total_steps``.
        gamma: the factor of each drop.
    """

    name = "paper"

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, warmup_lr: float = 0.01,
                 milestone_fracs=(0.5, 0.75), gamma: float = 0.1):
        super().__init__(base_lr, total_steps)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = _check_lr("warmup_lr", warmup_lr)
        fracs = tuple(float(f) for f in milestone_fracs)
        if any(not 0 < f <= 1 for f in fracs) or list(fracs) != sorted(fracs):
            raise ValueError(f"milestone_fracs must be increasing fractions in (0, 1], got {milestone_fracs!r}")
        self.milestone_fracs = fracs
        self.milestones = tuple(int(f * self.total_steps) for f in fracs)
        self.gamma = _check_lr("gamma", gamma)

    def __call__(self, step: int) -> float:
        step = self._check_step(step)
        if step < self.warmup_steps:
            return self.warmup_lr
        return self.base_lr * self.factor(step)

    def factor(self, step: int) -> float:
        """``gamma ** (number of milestones passed)`` (the warm-up is handled in ``__call__``)."""
        if step < self.warmup_steps:
            return self.warmup_lr / self.base_lr if self.base_lr else 0.0
        return self.gamma ** sum(step >= m for m in self.milestones)

    def config(self) -> dict:
        return dict(super().config(), warmup_steps=self.warmup_steps, warmup_lr=self.warmup_lr,
                    milestone_fracs=list(self.milestone_fracs), gamma=self.gamma)


class CosineSchedule(Schedule):
    """Cosine decay to ``min_lr`` after an optional linear warm-up from 0.

    With ``W = round(warmup_frac * total_steps)`` and ``T = total_steps``:
    ``lr(t) = base_lr * t / W`` for ``t < W``, else
    ``min_lr + (base_lr - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2``.

    Args:
        base_lr: the peak learning rate.
        total_steps: number of updates in the run.
        warmup_frac: fraction of the steps spent warming up (default 0: none).
        min_lr: the final learning rate (reached at ``total_steps``).
    """

    name = "cosine"

    def __init__(self, base_lr: float, total_steps: int, warmup_frac: float = 0.0, min_lr: float = 0.0):
        super().__init__(base_lr, total_steps)
        self.warmup_frac = _check_frac("warmup_frac", warmup_frac)
        self.warmup_steps = int(round(self.warmup_frac * self.total_steps))
        self.min_lr = _check_lr("min_lr", min_lr)

    def __call__(self, step: int) -> float:
        step = min(self._check_step(step), self.total_steps)
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def factor(self, step: int) -> float:
        return self(step) / self.base_lr if self.base_lr else 0.0

    def config(self) -> dict:
        return dict(super().config(), warmup_frac=self.warmup_frac, min_lr=self.min_lr)


class LinearSchedule(Schedule):
    """Linear warm-up from 0 to ``base_lr``, then linear decay to 0.

    With ``W = round(warmup_frac * total_steps)`` and ``T = total_steps``:
    ``lr(t) = base_lr * t / W`` for ``t < W`` and ``base_lr * (T - t) / (T - W)`` after,
    i.e. ``np.interp(t, [0, W, T], [0, base_lr, 0])`` (without warm-up the first step
    uses ``base_lr``). The first update of a warm-up has rate 0, as in the usual
    "linear warm-up" implementations where the schedule advances after each update.

    Args:
        base_lr: the peak learning rate.
        total_steps: number of updates in the run.
        warmup_frac: fraction of the steps spent warming up (the ``--warmup-frac`` option).
    """

    name = "linear"

    def __init__(self, base_lr: float, total_steps: int, warmup_frac: float = 0.0):
        super().__init__(base_lr, total_steps)
        self.warmup_frac = _check_frac("warmup_frac", warmup_frac)
        self.warmup_steps = int(round(self.warmup_frac * self.total_steps))

    def __call__(self, step: int) -> float:
        step = min(self._check_step(step), self.total_steps)
        if step < self.warmup_steps:
            return self.base_lr * step / self.warmup_steps
        return self.base_lr * (self.total_steps - step) / (self.total_steps - self.warmup_steps)

    def factor(self, step: int) -> float:
        return self(step) / self.base_lr if self.base_lr else 0.0

    def config(self) -> dict:
        return dict(super().config(), warmup_frac=self.warmup_frac)


SCHEDULES = {"paper": PaperSchedule, "cosine": CosineSchedule, "linear": LinearSchedule,
             "constant": ConstantSchedule}


def create_schedule(name: str, base_lr: float, total_steps: int, **options) -> Schedule:
    """Build a schedule by name: ``'paper'``, ``'cosine'``, ``'linear'`` or ``'constant'``.

    Args:
        name: the schedule's name.
        base_lr: the peak learning rate.
        total_steps: number of updates in the run.
        **options: the schedule's own options (``warmup_frac`` for cosine/linear;
            ``warmup_steps``, ``warmup_lr`` for paper).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
        TypeError: an option the schedule does not take.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(sorted(SCHEDULES))}")
    cls = SCHEDULES[name]
    try:
        return cls(base_lr, total_steps, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"schedule {name!r} does not take option(s) {sorted(options)}: {exc}") from None
        raise


def schedule_from_config(config: dict) -> Schedule:
    """Rebuild a schedule from its :meth:`Schedule.config`."""
    config = dict(config)
    name = config.pop("name")
    return create_schedule(name, config.pop("base_lr"), config.pop("total_steps"), **config)


class LRScheduler:
    """Set an optimiser's learning rate from a schedule, one optimiser step at a time.

    On construction the rate of step 0 is written into every parameter group; call
    :meth:`step` after each ``optimizer.step()`` to move to the next step. With several
    parameter groups each group's rate is ``schedule.factor(t)`` times the group's
    initial rate (the same as ``schedule(t)`` when a group's rate is ``base_lr``).

    Args:
        optimizer: an object with ``param_groups`` (``minires.optim.SGD``).
        schedule: a :class:`Schedule`.
        last_step: the step to start at (0 for a fresh run).

    Example:
        >>> sched = LRScheduler(opt, create_schedule('linear', 0.2, total_steps, warmup_frac=0.15))
        >>> for x, y in batches:
        ...     ...; opt.step(); sched.step()
    """

    def __init__(self, optimizer, schedule: Schedule, last_step: int = 0):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"expected an optimizer with param_groups, got {type(optimizer).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"expected a Schedule, got {type(schedule).__name__}")
        self.optimizer = optimizer
        self.schedule = schedule
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.step_count = schedule._check_step(last_step)
        self._apply()

    def _group_lr(self, group) -> float:
        if group["initial_lr"] == self.schedule.base_lr:
            return self.schedule(self.step_count)
        return group["initial_lr"] * self.schedule.factor(self.step_count)

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self._group_lr(group)

    def step(self) -> None:
        """Advance to the next optimiser step and set its learning rate."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The learning rate of each parameter group for the current step."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """``{'step_count': int, 'schedule': config}``: enough to resume exactly."""
        return {"step_count": self.step_count, "schedule": self.schedule.config()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step counter (and check the schedule matches the saved one).

        Raises:
            ValueError: the saved schedule configuration differs from this one.
        """
        saved = state.get("schedule")
        if saved is not None and dict(saved) != self.schedule.config():
            raise ValueError(f"saved schedule {saved} differs from this scheduler's {self.schedule.config()}")
        self.step_count = self.schedule._check_step(int(state["step_count"]))
        self._apply()
