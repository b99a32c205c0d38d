"""Optimisers and learning-rate schedules.

Example:
    >>> from minires.optim import SGD, LRScheduler, create_schedule, param_groups_weight_decay
    >>> opt = SGD(param_groups_weight_decay(model, 5e-4), lr=0.1, momentum=0.9, nesterov=True)
    >>> sched = LRScheduler(opt, create_schedule("paper", 0.1, total_steps=64000))
"""

from .schedules import (SCHEDULES, ConstantSchedule, CosineSchedule, LinearSchedule, LRScheduler,
                        PaperSchedule, Schedule, create_schedule, schedule_from_config)
from .sgd import SGD, param_groups_weight_decay, sgd_update_

__all__ = [
    "SGD", "param_groups_weight_decay", "sgd_update_", "Schedule", "PaperSchedule", "CosineSchedule",
    "LinearSchedule", "ConstantSchedule", "LRScheduler", "create_schedule", "schedule_from_config",
    "SCHEDULES",
]
