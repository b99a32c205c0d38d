"""LR schedules: values at known steps, the scheduler wrapper, state round trips, errors."""

import json
import math

import numpy as np
import pytest

import minires as mr
import minires.nn as nn
from minires.optim import (SGD, CosineSchedule, LinearSchedule, LRScheduler, PaperSchedule, create_schedule,
                           schedule_from_config)


def test_paper_schedule_drops_at_32k_and_48k_of_64k():
    s = create_schedule("paper", 0.1, 64000)
    assert isinstance(s, PaperSchedule) and s.milestones == (32000, 48000)
    expected = {0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001, 70000: 0.001}
    for step, lr in expected.items():
        assert s(step) == pytest.approx(lr, rel=1e-12), step


def test_paper_schedule_warmup_for_resnet110():
    s = PaperSchedule(0.1, 64000, warmup_steps=400)
    assert s(0) == 0.01 and s(399) == 0.01 and s(400) == 0.1 and s(32000) == pytest.approx(0.01)
    odd = PaperSchedule(0.2, 10)  # milestones int(5.0), int(7.5)
    assert [round(odd(t), 6) for t in range(10)] == [0.2] * 5 + [0.02] * 2 + [0.002] * 3


def test_cosine_schedule_values():
    s = create_schedule("cosine", 0.4, 100)
    assert s(0) == pytest.approx(0.4)
    assert s(25) == pytest.approx(0.4 * (1 + math.cos(math.pi / 4)) / 2)
    assert s(50) == pytest.approx(0.2)
    assert s(100) == pytest.approx(0.0, abs=1e-15) and s(150) == pytest.approx(0.0, abs=1e-15)
    warm = CosineSchedule(0.4, 100, warmup_frac=0.1, min_lr=0.01)
    assert warm(0) == 0.0 and warm(5) == pytest.approx(0.2) and warm(10) == pytest.approx(0.4)
    assert warm(55) == pytest.approx(0.01 + 0.39 * 0.5)
    assert warm(100) == pytest.approx(0.01)
    values = [warm(t) for t in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # decreasing after warm-up


def test_linear_schedule_warmup_then_decay_to_zero():
    s = create_schedule("linear", 0.2, 100, warmup_frac=0.15)
    assert isinstance(s, LinearSchedule) and s.warmup_steps == 15
    for t in range(0, 120):
        assert s(t) == pytest.approx(float(np.interp(t, [0, 15, 100], [0.0, 0.2, 0.0])), abs=1e-15), t
    assert s(0) == 0.0 and s(15) == pytest.approx(0.2) and s(7) == pytest.approx(0.2 * 7 / 15)
    assert s(50) == pytest.approx(0.2 * 50 / 85) and s(100) == 0.0
    plain = LinearSchedule(0.1, 10)
    assert plain(0) == pytest.approx(0.1) and plain(5) == pytest.approx(0.05) and plain(10) == 0.0
    # the 3-epoch CIFAR recipe: 391 steps per epoch at batch 128
    recipe = LinearSchedule(0.2, 3 * 391, warmup_frac=0.15)
    peak = max(range(3 * 391), key=recipe)
    assert peak == round(0.15 * 3 * 391) and recipe(peak) == pytest.approx(0.2)


def test_scheduler_sets_optimizer_lr_every_step_and_matches_torch_lambda_lr():
    torch = pytest.importorskip("torch")
    schedule = create_schedule("linear", 0.2, 50, warmup_frac=0.2)
    p = nn.Parameter(mr.ones(2))
    opt = SGD([{"params": [p]}, {"params": [nn.Parameter(mr.ones(1))], "lr": 0.02}], lr=0.2, momentum=0.9)
    sched = LRScheduler(opt, schedule)
    tparams = [torch.ones(2, requires_grad=True), torch.ones(1, requires_grad=True)]
    topt = torch.optim.SGD([{"params": tparams[:1]}, {"params": tparams[1:], "lr": 0.02}], lr=0.2, momentum=0.9)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lambda t: schedule(t) / 0.2)
    for step in range(60):
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-12, abs=1e-15), step
        assert opt.param_groups[0]["lr"] == pytest.approx(schedule(step), abs=1e-15)
        opt.step()
        topt.step()
        sched.step()
        tsched.step()


def test_scheduler_state_dict_round_trip_is_json_and_resumes():
    def make():
        opt = SGD([nn.Parameter(mr.ones(1))], lr=0.1)
        return opt, LRScheduler(opt, create_schedule("paper", 0.1, 100, warmup_steps=10))

    opt, sched = make()
    for _ in range(37):
        sched.step()
    state = json.loads(json.dumps(sched.state_dict()))
    assert state["step_count"] == 37
    expected = []
    for _ in range(30):
        sched.step()
        expected.append(opt.param_groups[0]["lr"])
    opt2, sched2 = make()
    assert opt2.param_groups[0]["lr"] == 0.01  # warm-up rate at step 0
    sched2.load_state_dict(state)
    assert sched2.step_count == 37 and opt2.param_groups[0]["lr"] == pytest.approx(0.1)
    resumed = []
    for _ in range(30):
        sched2.step()
        resumed.append(opt2.param_groups[0]["lr"])
    assert resumed == expected
    other = LRScheduler(SGD([nn.Parameter(mr.ones(1))], lr=0.1), create_schedule("cosine", 0.1, 100))
    with pytest.raises(ValueError, match="differs"):
        other.load_state_dict(state)
    rebuilt = schedule_from_config(state["schedule"])
    assert [rebuilt(t) for t in range(100)] == [sched.schedule(t) for t in range(100)]


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule 'step'.*cosine, linear, paper"):
        create_schedule("step", 0.1, 100)
    with pytest.raises(ValueError, match="total_steps must be a positive int"):
        create_schedule("linear", 0.1, 0)
    with pytest.raises(ValueError, match=r"warmup_frac must be in \[0, 1\)"):
        create_schedule("linear", 0.1, 100, warmup_frac=1.5)
    with pytest.raises(ValueError, match="base_lr"):
        create_schedule("cosine", -0.1, 100)
    with pytest.raises(TypeError, match="does not take"):
        create_schedule("paper", 0.1, 100, warmup_frac=0.1)
    with pytest.raises(ValueError, match="step must be >= 0"):
        create_schedule("cosine", 0.1, 100)(-1)
    with pytest.raises(TypeError, match="step must be an int"):
        create_schedule("cosine", 0.1, 100)(1.5)
    with pytest.raises(ValueError, match="milestone_fracs"):
        PaperSchedule(0.1, 100, milestone_fracs=(0.75, 0.5))
    with pytest.raises(TypeError, match="Schedule"):
        LRScheduler(SGD([nn.Parameter(mr.ones(1))], lr=0.1), lambda t: 0.1)
