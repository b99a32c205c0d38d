"""The 'gpu_gemm' convolution algorithm equals the im2col reference (it runs on NumPy too)."""

import numpy as np
import pytest

from minires import backend
from minires.kernels import conv as K
from minires.kernels import conv_gpu

CASES = [  # (N, C, H, W, C_out, KH, KW, stride, padding, groups, bias)
    (2, 3, 8, 8, 4, 3, 3, 1, 1, 1, False),
    (3, 4, 9, 7, 5, 3, 3, 2, 1, 1, True),
    (2, 6, 6, 6, 4, 1, 1, 2, 0, 1, False),
    (2, 4, 7, 7, 6, 3, 2, (2, 1), (0, 1), 2, True),
]


def _arrays(rng, case, dtype=np.float64):
    N, C, H, W, C_out, KH, KW, stride, padding, groups, bias = case
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C_out, C // groups, KH, KW)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype) if bias else None
    return x, w, b, dict(stride=stride, padding=padding, groups=groups)


def _run(x, w, b, options, algorithm, rng_seed=5):
    """Forward, input and weight gradients through the algorithm's own functions (any device)."""
    g = K.conv_geometry(x.shape, w.shape, options["stride"], options["padding"], options["groups"],
                        None if b is None else b.shape)
    algo = {"reference": K.ConvAlgorithm("reference", K.reference_forward, K.reference_backward_input,
                                         K.reference_backward_weight),
            "gpu_gemm": conv_gpu.GPU_GEMM}[algorithm]
    ws = {}
    out = algo.forward(x, w, b, g, ws)
    grad = np.random.default_rng(rng_seed).standard_normal(out.shape).astype(out.dtype)
    grad = backend.to_device(grad, backend.array_device(x))
    dx = algo.backward_input(grad, w, g, ws)
    dw = algo.backward_weight(grad, x, g, ws)
    return out, dx, dw, ws


@pytest.mark.parametrize("case", CASES)
def test_gpu_gemm_equals_reference_on_numpy(rng, case):
    x, w, b, options = _arrays(rng, case)
    ref = _run(x, w, b, options, "reference")
    got = _run(x, w, b, options, "gpu_gemm")
    for r, g in zip(ref[:3], got[:3]):
        # the same GEMMs on the same columns (BLAS may round differently with memory alignment)
        np.testing.assert_allclose(g, r, rtol=1e-13, atol=1e-13)
    assert "cols" not in got[3]  # the forward's columns were used by the weight gradient and dropped


def test_gpu_gemm_keeps_columns_only_below_the_limit(rng, monkeypatch):
    x, w, b, options = _arrays(rng, CASES[0])
    g = K.conv_geometry(x.shape, w.shape, 1, 1, 1)
    ws = {}
    conv_gpu.gemm_forward(x, w, b, g, ws)
    assert ws["cols"].shape == (2, 1, 27, 64)
    monkeypatch.setattr(conv_gpu, "KEEP_COLS_BYTES", 0)
    ws = {}
    conv_gpu.gemm_forward(x, w, b, g, ws)
    assert "cols" not in ws
    ref = _run(x, w, b, options, "reference")
    got = _run(x, w, b, options, "gpu_gemm")  # recomputes the columns in backward
    np.testing.assert_allclose(got[2], ref[2], rtol=1e-13, atol=1e-13)


def test_auto_picks_gpu_gemm_only_on_the_gpu():
    g = K.conv_geometry((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1)
    assert K.select_conv_algorithm(g, "cuda:0").name == "gpu_gemm"
    assert K.select_conv_algorithm(g, "cpu").name != "gpu_gemm"
    grouped = K.conv_geometry((2, 4, 8, 8), (4, 2, 3, 3), 1, 1, 2)
    assert K.select_conv_algorithm(grouped, "cuda:0").name != "gpu_gemm"


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_gemm_on_gpu_matches_cpu_reference(rng, case, dtype):
    x, w, b, options = _arrays(rng, case, dtype)
    cpu = _run(x, w, b, options, "reference")

    def dev(a):
        return None if a is None else backend.to_device(a, "cuda")

    gpu = _run(dev(x), dev(w), dev(b), options, "gpu_gemm")
    ws = {}
    K.conv2d_forward(dev(x), dev(w), dev(b), workspace=ws, **options)  # 'auto' on the GPU
    assert ws["algorithm"] == ("gpu_gemm" if options["groups"] == 1 else "reference")
    gpu_ref = _run(dev(x), dev(w), dev(b), options, "reference")
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    same = dict(rtol=1e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
    for c, g, gr in zip(cpu[:3], gpu[:3], gpu_ref[:3]):
        np.testing.assert_allclose(backend.as_numpy(g), backend.as_numpy(gr), **same)  # same kernels and GEMMs
        np.testing.assert_allclose(backend.as_numpy(g), c, **tol)
