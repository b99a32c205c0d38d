"""Helpers comparing a minires module with a PyTorch twin: outputs, loss, gradients, BN statistics.

Errors are judged relative to each tensor's scale: ``max|mine - ref| <= rtol * max(1e-30, max|ref|)``
(a per-tensor relative error, so a gradient that is tiny everywhere is not judged against itself).

Whole-model float32 runs also carry a float64 copy of the torch model. Some gradients
(e.g. a BN scale whose effect the next BN almost normalises away) cancel to ~1e-6 of
their terms, and then *PyTorch's own* float32 result is off from the float64 truth by
~1e-3 relative. Such a tensor passes if minires is within ``rtol`` of torch float32, or
at most twice as far from the float64 truth as torch float32 is.
"""

import copy

import numpy as np
import torch

import minires as mr
import minires.functional as F

RTOL = {np.dtype(np.float32): 2e-4, np.dtype(np.float64): 1e-9}


def rel_err(mine, ref) -> float:
    mine, ref = np.asarray(mine, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert mine.shape == ref.shape, f"shape {mine.shape} != torch {ref.shape}"
    return float(np.abs(mine - ref).max() / max(1e-30, np.abs(ref).max())) if ref.size else 0.0


def check(name, mine, ref, rtol, truth=None):
    """Assert ``mine`` matches ``ref``; with a float64 ``truth``, allow torch's own float32 error x 2."""
    err = rel_err(mine, ref)
    if err <= rtol:
        return err
    if truth is not None:
        mine_err, torch_err = rel_err(mine, truth), rel_err(ref, truth)
        assert mine_err <= 2 * torch_err, (f"{name}: relative error {err:.3e} vs torch float32; vs float64 truth "
                                           f"minires {mine_err:.3e}, torch float32 {torch_err:.3e}")
        return mine_err
    raise AssertionError(f"{name}: relative error {err:.3e} > {rtol:.1e}")


def load_from_torch(mine, ref, rename=lambda k: k):
    """Copy the torch model's state (parameters and buffers) into ``mine`` (strict)."""
    mine.load_state_dict({rename(k): v.detach().cpu().numpy() for k, v in ref.state_dict().items()})


def compare_state(mine, ref, rtol, rename=lambda k: k, what="after", ref64=None):
    """Every parameter and buffer (running stats, num_batches_tracked) of both models."""
    mine_state = mine.state_dict()
    truth = ref64.state_dict() if ref64 is not None else {}
    for name, value in ref.state_dict().items():
        got = mine_state[rename(name)]
        got = got.data if hasattr(got, "data") and not isinstance(got, np.ndarray) else got
        if name.endswith("num_batches_tracked"):
            assert int(np.asarray(got)) == int(value), f"{name}: {got} != {int(value)}"
        else:
            exact = truth[name].detach().numpy() if name in truth else None
            check(f"{what} {name}", mr.backend.as_numpy(got), value.detach().numpy(), rtol, exact)


def global_grad_error(mine, ref, rename=lambda k: k) -> float:
    """``||g_mine - g_ref|| / ||g_ref||`` over all parameters' gradients concatenated.

    ``mine`` may be a minires or a torch module (to measure torch float32 against float64).
    """
    mine_params = dict(mine.named_parameters())
    diff = total = 0.0
    for name, p in ref.named_parameters():
        g = p.grad.numpy().astype(np.float64)
        other = mine_params[rename(name)].grad
        other = other.numpy() if isinstance(other, torch.Tensor) else mr.backend.as_numpy(other)
        diff += float(np.square(other - g).sum())
        total += float(np.square(g).sum())
    return (diff / total) ** 0.5


def compare_grads(mine, ref, rtol, rename=lambda k: k, ref64=None):
    mine_params = dict(mine.named_parameters())
    truth = dict(ref64.named_parameters()) if ref64 is not None else {}
    assert {rename(k) for k, _ in ref.named_parameters()} == set(mine_params)
    worst = 0.0
    for name, p in ref.named_parameters():
        g = mine_params[rename(name)].grad
        assert g is not None, f"{name}: no gradient in minires"
        exact = truth[name].grad.numpy() if name in truth else None
        worst = max(worst, check(f"grad {name}", mr.backend.as_numpy(g), p.grad.numpy(), rtol, exact))
    return worst


def _set_mode(mine, ref, mode):
    assert mode in ("train", "eval")
    mine.train(mode == "train")
    ref.train(mode == "train")


def model_step_parity(mine, ref, x, y, modes=("train", "eval"), lr=0.05, rename=lambda k: k, rtol=None,
                      global_grad_rtol=None):
    """One SGD step per mode on classifiers: logits, loss, every grad, stats, then the updated model.

    ``x`` is an NCHW float array, ``y`` int64 class labels. Returns the worst gradient error.
    ``global_grad_rtol`` replaces the per-tensor gradient check by one on all gradients
    together (for deep float32 nets, where a pre-activation within float32 rounding of zero
    can take the other ReLU branch in one of the two libraries: a real, local difference
    that says nothing about correctness; float64 runs check those nets exactly). In that
    mode no SGD step is taken; both modes start from the same weights.
    """
    rtol = RTOL[np.dtype(x.dtype)] if rtol is None else rtol
    load_from_torch(mine, ref, rename)
    ref64 = copy.deepcopy(ref).double() if x.dtype == np.float32 else None
    torch_models = [ref] + ([ref64] if ref64 is not None else [])
    worst = 0.0
    for mode in modes:
        _set_mode(mine, ref, mode)
        mine.zero_grad()
        logits = mine(mr.tensor(x))
        loss = F.cross_entropy(logits, mr.tensor(y))
        loss.backward()
        outs = []
        for model in torch_models:
            model.train(mode == "train")
            model.zero_grad()
            out = model(torch.tensor(x).to(next(model.parameters()).dtype))
            ref_loss = torch.nn.functional.cross_entropy(out, torch.tensor(y))
            ref_loss.backward()
            outs.append((out.detach().numpy(), ref_loss.detach().numpy()))
        truth = outs[1] if ref64 is not None else (None, None)
        check(f"{mode} logits", logits.numpy(), outs[0][0], rtol, truth[0])
        check(f"{mode} loss", loss.numpy(), outs[0][1], rtol, truth[1])
        if global_grad_rtol is None:
            worst = max(worst, compare_grads(mine, ref, rtol, rename, ref64))
        else:
            err = global_grad_error(mine, ref, rename)
            if err > global_grad_rtol and ref64 is not None:  # as good as torch float32 is, against float64
                torch_err = global_grad_error(ref, ref64)
                assert global_grad_error(mine, ref64, rename) <= 2 * torch_err, (
                    f"{mode}: global gradient error {err:.3e} > {global_grad_rtol:.1e} and more than twice "
                    f"torch float32's own error {torch_err:.3e}")
            else:
                assert err <= global_grad_rtol, f"{mode}: global gradient error {err:.3e} > {global_grad_rtol:.1e}"
            worst = max(worst, err)
        compare_state(mine, ref, rtol, rename, what=f"{mode} stats", ref64=ref64)
        if global_grad_rtol is not None:
            continue  # no step: float32 trajectories of deep nets legitimately drift apart (see above)
        with torch.no_grad():  # the training step, identical on every side
            for model in torch_models:
                for p in model.parameters():
                    p -= lr * p.grad
        params = dict(mine.named_parameters())
        for name, p in ref.named_parameters():
            q = params[rename(name)]
            q.data[...] = q.data - lr * q.grad
        compare_state(mine, ref, rtol, rename, what=f"{mode} after step", ref64=ref64)
        with mr.no_grad(), torch.no_grad():
            after = [m(torch.tensor(x).to(next(m.parameters()).dtype)).numpy() for m in torch_models]
            check(f"{mode} logits after step", mine(mr.tensor(x)).numpy(), after[0], rtol,
                  after[1] if ref64 is not None else None)
    return worst


def block_parity(mine, ref, x, modes=("train", "eval"), rename=lambda k: k, rtol=None, seed=0):
    """A block (any NCHW -> NCHW module): output, input gradient, parameter gradients, BN stats."""
    rtol = RTOL[np.dtype(x.dtype)] if rtol is None else rtol
    load_from_torch(mine, ref, rename)
    rng = np.random.default_rng(seed)
    for mode in modes:
        _set_mode(mine, ref, mode)
        mine.zero_grad()
        ref.zero_grad()
        xm = mr.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        out, ref_out = mine(xm), ref(xt)
        cotangent = rng.standard_normal(ref_out.shape).astype(x.dtype)
        (out * mr.tensor(cotangent)).sum().backward()
        (ref_out * torch.tensor(cotangent)).sum().backward()
        check(f"{mode} output", out.numpy(), ref_out.detach().numpy(), rtol)
        check(f"{mode} input grad", xm.grad, xt.grad.numpy(), rtol)
        compare_grads(mine, ref, rtol, rename)
        compare_state(mine, ref, rtol, rename, what=f"{mode} stats")
