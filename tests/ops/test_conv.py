"""``F.conv2d``: float64 gradcheck, PyTorch parity (forward and every gradient, float32 and
float64) over a grid of kernel/stride/padding/groups, NaN propagation and bad input."""

import itertools

import numpy as np
import pytest

import minires as mr
import minires.functional as F
from minires.kernels.conv import available_conv_algorithms, conv_algorithm, conv_geometry, select_conv_algorithm
from tests.kernels.test_conv import naive_conv2d
from tests.torch_parity import assert_torch_parity

# --- the parity grid ------------------------------------------------------------------------
# kernel 1/3/5/7 x stride 1/2/3 x padding 0-3 x groups 1/2/4/depthwise = 192 combinations,
# all run by default (about 4 s for both dtypes). Each combination gets channel counts that
# fit its groups and, by its position in the grid, batch 1 or 2, bias or not, and a size
# that fits the kernel, non-square, odd or even. The `slow` grid crosses the 192 with every
# batch (1, 3), bias (yes, no) and size (square odd, non-square even or odd) choice.

GROUPS = {  # name: (C, C_out, groups)
    "g1": (3, 5, 1),
    "g2": (4, 6, 2),
    "g4": (8, 4, 4),
    "depthwise": (4, 8, 4),   # groups == C, channel multiplier 2
}
GRID = list(itertools.product([1, 3, 5, 7], [1, 2, 3], [0, 1, 2, 3], list(GROUPS)))


def make_case(kernel, stride, padding, groups_name, N, bias, size_kind):
    """One parity case; ``size_kind`` 0/1/2: square odd, non-square even, non-square odd."""
    C, C_out, groups = GROUPS[groups_name]
    smallest = max(kernel - 2 * padding, 1)   # the kernel must fit the padded input
    H = smallest + 2 + (smallest % 2 == 0)     # odd
    W = {0: H, 1: H + 1, 2: H + 2}[size_kind]
    if size_kind == 1:
        H = H + 1                               # both even, W != H
        W = W + 2
    return dict(N=N, C=C, H=H, W=W, C_out=C_out, kernel=kernel, stride=stride, padding=padding,
                groups=groups, bias=bias, name=groups_name)


def grid_case(index):
    return make_case(*GRID[index], N=1 if index % 2 == 0 else 2, bias=index % 4 != 3, size_kind=index % 3)


EXHAUSTIVE = [(*combo, N, bias, size_kind) for combo in GRID for N in (1, 3) for bias in (True, False)
              for size_kind in (0, 1, 2)]


def _case_id(case):
    return (f"k{case['kernel']}_s{case['stride']}_p{case['padding']}_{case['name']}_N{case['N']}_"
            f"{case['H']}x{case['W']}{'' if case['bias'] else '_nobias'}")


def _inputs(case, rng):
    x = rng.standard_normal((case["N"], case["C"], case["H"], case["W"]))
    w = rng.standard_normal((case["C_out"], case["C"] // case["groups"], case["kernel"], case["kernel"]))
    b = rng.standard_normal(case["C_out"]) if case["bias"] else None
    return [x, w, b]


def _check_case(case, dtype, rng, device="cpu", algorithm="auto"):
    torch = pytest.importorskip("torch")
    with conv_algorithm(algorithm):
        assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, _inputs(case, rng), dtype=dtype, device=device,
                            stride=case["stride"], padding=case["padding"], groups=case["groups"])


def _supports(algorithm, case, device="cpu"):
    geometry = conv_geometry((case["N"], case["C"], case["H"], case["W"]),
                             (case["C_out"], case["C"] // case["groups"], case["kernel"], case["kernel"]),
                             case["stride"], case["padding"], case["groups"])
    return select_conv_algorithm(geometry, device, algorithm).supports(geometry, device)


GRID_CASES = [grid_case(i) for i in range(len(GRID))]
# every algorithm registered at import time ('reference' and any fast path) runs the grid
# cases it supports; 'auto' is covered by whichever of them it picks
ALGORITHMS = [name for name in available_conv_algorithms() if name != "auto"]
GRID_PARAMS = [pytest.param(case, name, id=f"{name}-{_case_id(case)}")
               for name in ALGORITHMS for case in GRID_CASES if _supports(name, case)]


def test_grid_covers_batch_one_bias_and_sizes():
    assert {c["N"] for c in GRID_CASES} == {1, 2}
    assert {c["bias"] for c in GRID_CASES} == {True, False}
    assert any(c["H"] != c["W"] for c in GRID_CASES) and any(c["H"] == c["W"] for c in GRID_CASES)
    assert any(c["H"] % 2 == 1 for c in GRID_CASES) and any(c["W"] % 2 == 0 for c in GRID_CASES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case, algorithm", GRID_PARAMS)
def test_torch_parity_grid(case, algorithm, dtype, rng):
    _check_case(case, dtype, rng, algorithm=algorithm)


def test_auto_runs_the_grid_too(rng):
    torch = pytest.importorskip("torch")
    for case in GRID_CASES[::9]:
        _check_case(case, np.float32, rng, algorithm="auto")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [make_case(*e) for e in EXHAUSTIVE], ids=_case_id)
def test_torch_parity_exhaustive_grid(case, dtype, rng):
    _check_case(case, dtype, rng)


# (x shape, weight shape, bias?, stride, padding, groups): shapes the grid does not reach
SPECIAL = [
    ((1, 3, 8, 8), (4, 3, 3, 3), True, 1, 1, 1),              # batch 1, square
    ((2, 2, 7, 5), (3, 2, 3, 5), True, (2, 1), (1, 2), 1),    # non-square kernel, pair options
    ((2, 4, 6, 9), (4, 2, 2, 4), False, (1, 3), (0, 1), 2),   # even kernel
    ((3, 6, 5, 5), (6, 1, 3, 3), True, 2, 1, 6),              # depthwise, batch 3
    ((1, 2, 1, 9), (2, 2, 1, 3), True, 1, 0, 1),              # H = 1
    ((2, 3, 4, 4), (2, 3, 4, 4), True, 1, 0, 1),              # kernel == input: 1x1 output
    ((1, 2, 2, 2), (3, 2, 7, 7), True, 3, 3, 1),              # kernel > input, padded to fit
    ((2, 16, 9, 7), (32, 2, 3, 3), True, 2, 1, 8),            # wider channels, 8 groups
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECIAL, ids=[f"x{s[0]}_w{s[1]}_s{s[3]}_p{s[4]}_g{s[5]}" for s in SPECIAL])
def test_torch_parity_special_shapes(spec, dtype, rng):
    torch = pytest.importorskip("torch")
    x_shape, w_shape, bias, stride, padding, groups = spec
    inputs = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[0]) if bias else None]
    assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, inputs, dtype=dtype, stride=stride,
                        padding=padding, groups=groups)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_parity_unbatched_input(dtype, rng):
    torch = pytest.importorskip("torch")
    inputs = [rng.standard_normal((4, 7, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)]
    out, _ = assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, inputs, dtype=dtype, stride=2,
                                 padding=1, groups=2)
    assert out.shape == (6, 4, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 2), (4, 3), (5, 2)])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_torch_parity_string_padding(padding, kernel, dtype, rng):
    torch = pytest.importorskip("torch")
    import warnings  # noqa: PLC0415

    inputs = [rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((4, 2) + kernel), rng.standard_normal(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns that even 'same' kernels copy the input
        out, _ = assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, inputs, dtype=dtype, padding=padding,
                                     groups=2)
    if padding == "same":
        assert out.shape == (2, 4, 7, 6)


def test_torch_parity_with_only_some_inputs_requiring_grad(rng):
    torch = pytest.importorskip("torch")
    inputs = [rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)]
    for requires_grad in ([True, False, False], [False, True, False], [False, False, True]):
        assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, inputs, dtype=np.float64,
                            requires_grad=requires_grad, padding=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["input", "weight", "bias"])
def test_nan_propagates_as_in_torch(where, dtype, rng):
    torch = pytest.importorskip("torch")
    x, w, b = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    {"input": x, "weight": w, "bias": b}[where].flat[1] = np.nan
    # a NaN weight meets the zero padding; torch's float32 (oneDNN) path skips padded taps
    # and so differs from its own float64 path there: compare the weight case unpadded
    padding = 0 if where == "weight" else 1
    out, grads = assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, [x, w, b], dtype=dtype,
                                     stride=1, padding=padding)
    assert np.isnan(out).any() and not np.isnan(out).all()


def test_nan_weight_with_padding_follows_ieee_like_torch_float64(rng):
    # 0 * NaN = NaN: a NaN weight tap makes every output of its channel NaN, padded or not
    torch = pytest.importorskip("torch")
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    w[0, 0, 0, 1] = np.nan
    out, _ = assert_torch_parity(F.conv2d, torch.nn.functional.conv2d, [x, w, None], dtype=np.float64, padding=1)
    assert np.isnan(out[:, 0]).all() and not np.isnan(out[:, 1:]).any()


# --- forward reference, float64 gradcheck -----------------------------------------------------

def test_forward_matches_naive_loops(rng):
    x, w, b = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2)), rng.standard_normal(6)
    out = F.conv2d(mr.tensor(x), mr.tensor(w), mr.tensor(b), stride=(2, 1), padding=(1, 0), groups=2)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.numpy(), naive_conv2d(x, w, b, (2, 1), (1, 0), 2), rtol=1e-12, atol=1e-12)


# (x shape, weight shape, bias?, stride, padding, groups)
GRADCHECK = [
    ((1, 2, 5, 5), (3, 2, 3, 3), True, 1, 1, 1),
    ((2, 2, 5, 4), (2, 2, 2, 3), True, (2, 1), (0, 1), 1),
    ((1, 4, 5, 6), (4, 2, 3, 3), False, 2, 1, 2),
    ((2, 3, 4, 4), (6, 1, 3, 3), True, 1, (1, 2), 3),      # depthwise, multiplier 2
    ((1, 1, 7, 6), (2, 1, 5, 5), True, 3, 2, 1),
    ((1, 2, 3, 3), (2, 2, 1, 1), True, 2, 1, 1),           # 1x1 with padding and stride
    ((1, 1, 4, 5), (1, 1, 7, 7), True, 1, 3, 1),           # kernel larger than the input
]


@pytest.mark.parametrize("spec", GRADCHECK, ids=[f"x{s[0]}_w{s[1]}_s{s[3]}_p{s[4]}_g{s[5]}" for s in GRADCHECK])
def test_gradcheck_float64(spec):
    x_shape, w_shape, bias, stride, padding, groups = spec
    gen = np.random.default_rng(7)
    x = mr.tensor(gen.standard_normal(x_shape), requires_grad=True, dtype=np.float64)
    w = mr.tensor(gen.standard_normal(w_shape), requires_grad=True, dtype=np.float64)
    b = mr.tensor(gen.standard_normal(w_shape[0]), requires_grad=True, dtype=np.float64) if bias else None
    inputs = [x, w] + ([b] if bias else [])
    assert mr.gradcheck(lambda x, w, b=None: F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups),
                        inputs)


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    # the check above can fail: break the input gradient and see gradcheck raise
    from minires.ops import conv as conv_ops

    original = conv_ops.conv2d_backward_input
    monkeypatch.setattr(conv_ops, "conv2d_backward_input", lambda *a, **k: 1.01 * original(*a, **k))
    gen = np.random.default_rng(0)
    x = mr.tensor(gen.standard_normal((1, 1, 4, 4)), requires_grad=True, dtype=np.float64)
    w = mr.tensor(gen.standard_normal((1, 1, 3, 3)), dtype=np.float64)
    with pytest.raises(mr.GradcheckError):
        mr.gradcheck(lambda x: F.conv2d(x, w, padding=1), [x])


# --- autograd behaviour ----------------------------------------------------------------------

def test_only_required_gradients_are_computed(rng):
    x = mr.tensor(rng.standard_normal((1, 2, 5, 5)), dtype=np.float32)
    w = mr.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True, dtype=np.float32)
    out = F.conv2d(x, w, padding=1)
    assert out.requires_grad and out.dtype == np.float32
    out.sum().backward()
    assert x.grad is None and w.grad is not None and w.grad.dtype == np.float32
    with mr.no_grad():
        assert not F.conv2d(x, w).requires_grad


def test_reference_and_auto_agree(rng):
    x = mr.tensor(rng.standard_normal((2, 4, 6, 6)), requires_grad=True, dtype=np.float64)
    w = mr.tensor(rng.standard_normal((4, 2, 3, 3)), requires_grad=True, dtype=np.float64)
    results = []
    for name in ("reference", "auto"):
        with conv_algorithm(name):
            x.grad = w.grad = None
            out = F.conv2d(x, w, stride=2, padding=1, groups=2)
            (out * out).sum().backward()
            results.append((out.numpy(), x.grad.copy(), w.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_saved_arrays_are_released_after_backward(rng):
    x = mr.tensor(rng.standard_normal((1, 2, 5, 5)), requires_grad=True)
    w = mr.tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    fn = out.grad_fn
    out.sum().backward()
    assert fn.released and not hasattr(fn, "x") and not hasattr(fn, "workspace")


# --- bad input --------------------------------------------------------------------------------

def _t(*shape, dtype=np.float32):
    return mr.tensor(np.zeros(shape), dtype=dtype)


@pytest.mark.parametrize("args, kwargs, error, words", [
    ((_t(2, 4, 5), _t(3, 4, 3, 3)), {}, ValueError, ["4 channels", "2 channels", "(2, 4, 5)"]),  # unbatched, C mismatch
    ((_t(5, 5), _t(3, 4, 3, 3)), {}, ValueError, ["rank 4", "rank 2"]),
    ((_t(1, 2, 4, 5, 5), _t(3, 4, 3, 3)), {}, ValueError, ["rank 4", "rank 5"]),
    ((_t(1, 4, 5, 5), _t(3, 4, 3)), {}, ValueError, ["rank 4", "rank 3"]),
    ((_t(1, 4, 5, 5), _t(3, 2, 3, 3)), {}, ValueError, ["2 channels", "4 channels"]),
    ((_t(1, 4, 5, 5), _t(3, 2, 3, 3)), dict(groups=2), ValueError, ["(3", "groups (2)"]),
    ((_t(1, 3, 5, 5), _t(4, 1, 3, 3)), dict(groups=2), ValueError, ["(3)", "groups (2)"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3), _t(4)), {}, ValueError, ["(6,)", "(4,)"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3), _t(6, 1)), {}, ValueError, ["(6,)", "(6, 1)"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 7, 7)), dict(padding=0), ValueError, ["(7, 7)", "(5, 5)"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(stride=0), ValueError, ["positive", "0"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(stride=(2, 0)), ValueError, ["positive", "(2, 0)"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(padding=-1), ValueError, ["non-negative", "-1"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(padding="full"), ValueError, ["'same'", "'full'"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(padding="same", stride=2), ValueError, ["stride 1", "2"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(padding=None), TypeError, ["padding", "None"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3)), dict(groups=0), ValueError, ["groups", "0"]),
    ((np.zeros((1, 4, 5, 5)), _t(6, 4, 3, 3)), {}, TypeError, ["Tensor", "ndarray"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3), np.zeros(6)), {}, TypeError, ["Tensor or None", "ndarray"]),
    ((_t(1, 4, 5, 5, dtype=np.int64), _t(6, 4, 3, 3)), {}, TypeError, ["floating", "int64"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3, dtype=np.float64)), {}, TypeError, ["float32", "float64"]),
    ((_t(1, 4, 5, 5), _t(6, 4, 3, 3), _t(6, dtype=np.float64)), {}, TypeError, ["float32", "float64"]),
])
def test_bad_input_raises_with_expected_and_given(args, kwargs, error, words):
    with pytest.raises(error) as info:
        F.conv2d(*args, **kwargs)
    message = str(info.value)
    assert "conv2d" in message.lower()
    for word in words:
        assert word in message, (word, message)


# --- GPU ----------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", GRID_CASES[::7], ids=_case_id)
def test_gpu_torch_parity(case, dtype, rng):
    _check_case(case, dtype, rng, device="cuda")


@pytest.mark.gpu
def test_gpu_mixed_devices_raise(rng):
    x = mr.tensor(rng.standard_normal((1, 2, 5, 5)), device="cuda")
    w = mr.tensor(rng.standard_normal((3, 2, 3, 3)))
    with pytest.raises(ValueError, match="cpu"):
        F.conv2d(x, w)
