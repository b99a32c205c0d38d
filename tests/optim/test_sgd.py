"""SGD against torch.optim.SGD step for step, parameter groups, state_dict, validation."""

import itertools

import numpy as np
import pytest

import minires as mr
import minires.nn as nn
from minires.optim import SGD, param_groups_weight_decay, sgd_update_

torch = pytest.importorskip("torch")

# every combination of the options (nesterov needs momentum and no dampening, as in torch)
COMBOS = [
    dict(momentum=m, nesterov=n, weight_decay=wd, dampening=d, maximize=mx)
    for m, n, wd, d, mx in itertools.product([0.0, 0.9], [False, True], [0.0, 5e-4], [0.0, 0.1], [False, True])
    if not (n and (m == 0 or d != 0))
]
# torch fuses ``a + alpha * b`` (one rounding, FMA) where NumPy rounds twice, so results may
# differ by an ulp or two of the array's magnitude per step: atol is relative to max |value|
TOLERANCE = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-6, atol=2.5e-7)}


def _assert_close(mine, theirs, dtype):
    scale = max(1.0, float(np.abs(theirs).max()))
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(mine, theirs, rtol=tol["rtol"], atol=tol["atol"] * scale)


def _run_both(options, dtype, rng, steps=10, lr=0.1, shapes=((4, 3), (3,), (2, 2, 3, 3))):
    init = [rng.standard_normal(s) for s in shapes]
    mine = [nn.Parameter(mr.tensor(a, dtype=dtype)) for a in init]
    theirs = [torch.tensor(a.astype(dtype), requires_grad=True) for a in init]
    opt = SGD(mine, lr=lr, **options)
    topt = torch.optim.SGD(theirs, lr=lr, **options)
    for _ in range(steps):
        for p, t in zip(mine, theirs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g.copy()
            t.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        for p, t in zip(mine, theirs):
            _assert_close(p.numpy(), t.detach().numpy(), dtype)
    return opt, topt, mine, theirs


@pytest.mark.parametrize("options", COMBOS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_matches_torch_for_10_steps(options, dtype, rng):
    opt, topt, mine, theirs = _run_both(options, dtype, rng)
    if options["momentum"]:
        for p, t in zip(mine, theirs):
            _assert_close(opt.state[p]["momentum_buffer"], topt.state[t]["momentum_buffer"].numpy(), dtype)


def test_sgd_on_a_model_with_real_gradients_and_lr_changes(rng):
    mine = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3)).double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.state_dict().items()})
    opt = SGD(param_groups_weight_decay(mine, 1e-2), lr=0.05, momentum=0.9, nesterov=True)
    tdecay = [p for p in theirs.parameters() if p.ndim > 1]
    tno = [p for p in theirs.parameters() if p.ndim <= 1]
    topt = torch.optim.SGD([{"params": tdecay, "weight_decay": 1e-2}, {"params": tno, "weight_decay": 0.0}],
                           lr=0.05, momentum=0.9, nesterov=True)
    for step in range(10):
        x = rng.standard_normal((8, 5))
        for group, tgroup in zip(opt.param_groups, topt.param_groups):
            group["lr"] = tgroup["lr"] = 0.05 / (1 + step)
        opt.zero_grad()
        topt.zero_grad()
        (mine(mr.tensor(x)) ** 2).mean().backward()
        (theirs(torch.from_numpy(x)) ** 2).mean().backward()
        opt.step()
        topt.step()
    for (name, p), t in zip(mine.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-11, atol=1e-13, err_msg=name)


def test_params_without_grad_are_skipped_and_get_no_state():
    a, b = nn.Parameter(mr.ones(2)), nn.Parameter(mr.ones(2))
    opt = SGD([a, b], lr=0.5, momentum=0.9)
    a.grad = np.ones(2, np.float32)
    opt.step()
    np.testing.assert_array_equal(a.numpy(), [0.5, 0.5])
    np.testing.assert_array_equal(b.numpy(), [1.0, 1.0])
    assert b not in opt.state


def test_update_is_in_place_and_does_not_touch_the_gradient():
    p = nn.Parameter(mr.ones(3))
    data = p.data
    grad = np.full(3, 2.0, np.float32)
    p.grad = grad
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    for _ in range(3):
        opt.step()
    assert p.data is data  # optimiser works in place: state_dict arrays and references stay valid
    np.testing.assert_array_equal(grad, [2.0, 2.0, 2.0])
    assert opt.state[p]["momentum_buffer"] is not grad


def test_sgd_update_function_matches_formula():
    param = np.array([1.0, -2.0])
    grad = np.array([0.5, 0.25])
    buf = sgd_update_(param, grad, None, lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=False)
    d_p = grad + 0.1 * np.array([1.0, -2.0])
    np.testing.assert_allclose(buf, d_p)
    np.testing.assert_allclose(param, np.array([1.0, -2.0]) - 0.1 * d_p)
    before = param.copy()
    buf2 = sgd_update_(param, grad, buf, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.0, nesterov=False)
    assert buf2 is buf
    np.testing.assert_allclose(buf, 0.9 * d_p + 0.5 * grad)
    np.testing.assert_allclose(param, before - 0.1 * buf)


def test_zero_grad():
    p = nn.Parameter(mr.ones(2))
    p.grad = np.ones(2, np.float32)
    opt = SGD([p], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_param_groups_options_and_weight_decay_split():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    groups = param_groups_weight_decay(model, 5e-4)
    assert len(groups) == 2
    decay = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 5e-4 and groups[1]["weight_decay"] == 0.0
    names = {n for n, p in model.named_parameters() if id(p) in decay}
    assert names == {"0.weight", "3.weight"}
    assert len(groups[1]["params"]) == 4  # conv bias, bn weight, bn bias, linear bias
    model[0].requires_grad_(False)
    assert sum(len(g["params"]) for g in param_groups_weight_decay(model, 5e-4)) == 4
    assert len(param_groups_weight_decay(nn.BatchNorm2d(2), 1e-4)) == 1  # no empty group
    opt = SGD(param_groups_weight_decay(model, 5e-4, skip=("3.weight",)), lr=0.1, momentum=0.9)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0]
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == 0.1
    opt = SGD([{"params": [model[3].weight], "lr": 0.01}, {"params": [model[3].bias]}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]
    assert "Parameter Group 1" in repr(opt)


def test_validation_errors():
    p = nn.Parameter(mr.ones(2))
    with pytest.raises(ValueError, match="Invalid lr value: -0.1"):
        SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="Invalid momentum"):
        SGD([p], lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="Invalid weight_decay"):
        SGD([p], lr=0.1, weight_decay=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD([p], lr=0.1, momentum=0.9, nesterov=True, dampening=0.1)
    with pytest.raises(TypeError, match="lr is required"):
        SGD([p])
    with pytest.raises(TypeError, match="lr must be a number"):
        SGD([p], lr="0.1")
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors or dicts, but got Parameter"):
        SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        SGD([p, np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="unknown options"):
        SGD([{"params": [p], "betas": (0.9, 0.99)}], lr=0.1)
    with pytest.raises(ValueError, match="Invalid lr .*param group 0"):
        SGD([{"params": [p], "lr": -1.0}], lr=0.1)


def test_state_dict_round_trip_resumes_identically(rng):
    def make():
        mr.manual_seed(0)
        return nn.Linear(3, 2).double()

    def grads_for(model, step):
        local = np.random.default_rng(step)
        for p in model.parameters():
            p.grad = local.standard_normal(p.shape)

    straight = make()
    opt = SGD(straight.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for step in range(6):
        grads_for(straight, step)
        opt.step()

    first = make()
    opt1 = SGD(first.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for step in range(3):
        grads_for(first, step)
        opt1.step()
    saved_model = {k: np.array(v) for k, v in first.state_dict().items()}
    saved = opt1.state_dict()
    assert set(saved) == {"state", "param_groups"}
    assert saved["param_groups"][0]["params"] == [0, 1]
    assert isinstance(saved["state"][0]["momentum_buffer"], np.ndarray)
    # like PyTorch's layout, so the structure compares with torch's
    tparams = [torch.zeros(3, 2, requires_grad=True), torch.zeros(2, requires_grad=True)]
    tsaved = torch.optim.SGD(tparams, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3).state_dict()
    core = {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "params"}
    assert core <= set(tsaved["param_groups"][0]) and core == set(saved["param_groups"][0])
    assert {k: tsaved["param_groups"][0][k] for k in core} == saved["param_groups"][0]
    snapshot = {i: {k: np.array(v) for k, v in s.items()} for i, s in saved["state"].items()}
    saved = {"state": snapshot, "param_groups": saved["param_groups"]}

    resumed = make()
    resumed.load_state_dict(saved_model)
    opt2 = SGD(resumed.parameters(), lr=0.5)  # options come back from the state dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["nesterov"] is True
    for step in range(3, 6):
        grads_for(resumed, step)
        opt2.step()
    for a, b in zip(straight.parameters(), resumed.parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_errors_and_dtype():
    p = nn.Parameter(mr.ones(2))
    opt = SGD([p], lr=0.1, momentum=0.9)
    good = {"state": {0: {"momentum_buffer": np.ones(2, np.float64)}},
            "param_groups": [dict(opt.state_dict()["param_groups"][0])]}
    opt.load_state_dict(good)
    assert opt.state[p]["momentum_buffer"].dtype == np.float32
    bad_shape = {"state": {0: {"momentum_buffer": np.ones(3)}}, "param_groups": good["param_groups"]}
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        opt.load_state_dict(bad_shape)
    with pytest.raises(ValueError, match="1 parameter groups"):
        SGD([{"params": [p]}, {"params": [nn.Parameter(mr.ones(1))]}], lr=0.1).load_state_dict(good)
    with pytest.raises(ValueError, match="with 1 parameters"):
        SGD([p, nn.Parameter(mr.ones(1))], lr=0.1).load_state_dict(good)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
