"""Build the notebooks from the cell sources below and execute them in place.

    python notebooks/make_notebooks.py            # write and execute all of them
    python notebooks/make_notebooks.py 01         # only those whose name contains '01'

The committed notebooks are this script's output (executed, figures embedded).
"""

import os
import sys

import nbformat
from nbclient import NotebookClient

HERE = os.path.dirname(os.path.abspath(__file__))

NB01 = [
    ("md", """# 01 · Backpropagation through a skip connection, by hand

A residual block computes $y = \\sigma(F(x) + x)$ with $F(x) = \\mathrm{BN}_2(W_2 * \\mathrm{relu}(\\mathrm{BN}_1(W_1 * x)))$
and $\\sigma$ = ReLU. With $g = \\partial L/\\partial y \\odot \\sigma'(F(x) + x)$ the chain rule gives

$$\\frac{\\partial L}{\\partial x} = \\underbrace{g}_{\\text{skip term}} + \\underbrace{\\Big(\\frac{\\partial F}{\\partial x}\\Big)^{\\!\\top} g}_{\\text{branch term}} .$$

The skip term passes the upstream gradient through unchanged (the "+1" of $\\partial L/\\partial x = \\partial L/\\partial y\\,(1 + \\partial F/\\partial x)$).
Below, one block is differentiated by hand in NumPy (convolutions as explicit sums, BN in train mode with its batch
statistics) and compared with minires' engine and with `minires.analysis.trace_residual_stream`."""),
    ("code", """import numpy as np
import matplotlib.pyplot as plt
import minires as mr
from minires import analysis, nn

plt.rcParams["figure.dpi"] = 72
from minires.models.blocks import BasicBlock

mr.manual_seed(0)
block = BasicBlock(4, 4, stride=1).double()       # conv-BN-ReLU-conv-BN, identity shortcut, ReLU after the add
block.train()                                     # BN normalises with the batch statistics
rng = np.random.default_rng(0)
x_np = rng.standard_normal((4, 4, 6, 6))          # (N, C, H, W)
upstream = rng.standard_normal((4, 4, 6, 6))      # dL/dy: the loss is L = sum(y * upstream)
print(block)"""),
    ("md", "## The engine's gradient"),
    ("code", """x = mr.tensor(x_np, requires_grad=True)
y = block(x)
(y * mr.tensor(upstream)).sum().backward()
engine_grad = x.grad
print("||dL/dx|| from the engine:", np.linalg.norm(engine_grad))"""),
    ("md", """## The same block in plain NumPy

`conv3x3` is a sum over the 9 kernel offsets of shifted, zero-padded inputs; its adjoint (the gradient with
respect to the input) scatters back with the same offsets. BN in train mode: $\\hat x = (x - \\mu_B)/\\sqrt{\\sigma_B^2 + \\epsilon}$,
and its backward $\\partial L/\\partial x = \\frac{\\gamma}{\\sqrt{\\sigma_B^2+\\epsilon}}\\,(d - \\overline{d} - \\hat x\\,\\overline{d\\,\\hat x})$ with means over $(N, H, W)$."""),
    ("code", """W1, W2 = block.conv1.weight.numpy(), block.conv2.weight.numpy()
g1, b1 = block.bn1.weight.numpy(), block.bn1.bias.numpy()
g2, b2 = block.bn2.weight.numpy(), block.bn2.bias.numpy()
EPS = block.bn1.eps

def conv3x3(x, w):                       # stride 1, padding 1
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    H, W = x.shape[2:]
    return sum(np.einsum("nchw,oc->nohw", xp[:, :, i:i + H, j:j + W], w[:, :, i, j])
               for i in range(3) for j in range(3))

def conv3x3_backward_input(d, w):        # the adjoint of conv3x3 in x
    H, W = d.shape[2:]
    dx = np.zeros((d.shape[0], w.shape[1], H + 2, W + 2))
    for i in range(3):
        for j in range(3):
            dx[:, :, i:i + H, j:j + W] += np.einsum("nohw,oc->nchw", d, w[:, :, i, j])
    return dx[:, :, 1:-1, 1:-1]

def bn_train(x, gamma, beta):
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + EPS)
    x_hat = (x - mu) * inv_std
    return gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1), (x_hat, inv_std)

def bn_train_backward(d, gamma, cache):
    x_hat, inv_std = cache
    m = lambda a: a.mean(axis=(0, 2, 3), keepdims=True)
    return gamma.reshape(1, -1, 1, 1) * inv_std * (d - m(d) - x_hat * m(d * x_hat))

# forward
a1 = conv3x3(x_np, W1)
z1, cache1 = bn_train(a1, g1, b1)
h1 = np.maximum(z1, 0)
a2 = conv3x3(h1, W2)
F_x, cache2 = bn_train(a2, g2, b2)
pre = F_x + x_np                          # identity shortcut
y_np = np.maximum(pre, 0)
print("forward matches the engine:", np.abs(y_np - y.numpy()).max())"""),
    ("code", """# backward, one line per derivative
g = upstream * (pre > 0)                  # through the post-add ReLU
skip_by_hand = g                          # S = identity: S^T g = g
d = bn_train_backward(g, g2, cache2)      # through BN2 (batch statistics)
d = conv3x3_backward_input(d, W2)         # through conv2
d = d * (z1 > 0)                          # through the inner ReLU
d = bn_train_backward(d, g1, cache1)      # through BN1
branch_by_hand = conv3x3_backward_input(d, W1)   # through conv1
grad_by_hand = skip_by_hand + branch_by_hand
print("max |by hand - engine| =", np.abs(grad_by_hand - engine_grad).max())"""),
    ("md", """## The analysis tool's split

`trace_residual_stream` runs forward and backward once and then takes two separate VJPs through the recorded
graph: $S^\\top g$ and $(\\partial F/\\partial x)^\\top g$. Here the "model" is the block alone and the loss is
$\\sum y \\odot$ `upstream`."""),
    ("code", """model = nn.Sequential(block)
record = analysis.trace_residual_stream(model, x_np, None, loss=lambda out: (out * mr.tensor(upstream)).sum())[0]
rows = [("skip term", skip_by_hand, record.skip_term), ("branch term", branch_by_hand, record.branch_term),
        ("dL/dx", grad_by_hand, record.grad_in)]
for name, hand, tool in rows:
    print(f"{name:12s} ||by hand|| = {np.linalg.norm(hand):.6f}   ||tool|| = {np.linalg.norm(tool):.6f}   "
          f"max diff = {np.abs(hand - tool).max():.2e}")
print(f"||branch|| / ||skip|| = {record.ratio:.3f}, cosine(skip, branch) = {record.cosine:.3f}, "
      f"post-add ReLU blocks {100 * record.blocked_fraction:.1f}% of the units")"""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
axes[0].scatter(record.skip_term.ravel(), record.branch_term.ravel(), s=6, alpha=0.6)
axes[0].set_xlabel("skip term  $g$"); axes[0].set_ylabel("branch term  $(\\\\partial F/\\\\partial x)^T g$")
axes[0].set_title("the two terms, element by element")
axes[1].bar(["skip", "branch", "sum = dL/dx"], [np.linalg.norm(skip_by_hand), np.linalg.norm(branch_by_hand),
            np.linalg.norm(grad_by_hand)], color=["tab:blue", "tab:orange", "tab:green"])
axes[1].set_title("norms")
plt.tight_layout(); plt.show()"""),
    ("md", """## The block's Jacobian: $\\|I + \\partial F/\\partial x\\|$ against $\\|\\partial F/\\partial x\\|$

`Linearization` records one forward and gives exact $Jv$ (forward mode) and $J^\\top u$ (reverse mode); power
iteration on $J^\\top J$ finds the spectral norm. On a small input we can also build $J$ explicitly and compare."""),
    ("code", """xs = rng.standard_normal((2, 4, 4, 4))
lin_F = analysis.Linearization(block.residual_branch, xs)
lin_sum = analysis.Linearization(lambda t: block.residual_branch(t) + block.shortcut(t), xs)
J_F = analysis.jacobian_matrix(lin_F)
J_sum = analysis.jacobian_matrix(lin_sum)
print("J is", J_F.shape, "; I + J_F == J_sum:", np.abs(np.eye(len(J_F)) + J_F - J_sum).max())
for name, lin, J in (("dF/dx", lin_F, J_F), ("I + dF/dx", lin_sum, J_sum)):
    est, hist = analysis.spectral_norm(lin, iters=200, tol=1e-10)
    print(f"||{name}||_2: power iteration {est:.6f} ({len(hist)} iterations), SVD {np.linalg.norm(J, 2):.6f}")
s_F, s_sum = np.linalg.svd(J_F, compute_uv=False), np.linalg.svd(J_sum, compute_uv=False)
plt.figure(figsize=(5.5, 3.4))
plt.semilogy(s_F, label="singular values of dF/dx"); plt.semilogy(s_sum, label="singular values of I + dF/dx")
plt.xlabel("index"); plt.legend(); plt.title("the identity lifts the small singular values"); plt.show()
print(f"smallest singular value: dF/dx {s_F[-1]:.2e}, I + dF/dx {s_sum[-1]:.2e}")"""),
]

NB02 = [
    ("md", """# 02 · Gradient norms: plain against residual networks

At initialisation (Kaiming normal, BN in train mode), how does $\\|\\partial L/\\partial x_l\\|$ change from the
output back to the input? A plain net multiplies one Jacobian per layer; a ResNet adds the identity at every
block. Small settings (batch 16, the embedded CIFAR-10 subset) so the notebook runs in CI; `minires gradflow`
and `benchmarks/gradnorm.py` run the full-size versions."""),
    ("code", """import warnings
warnings.filterwarnings("ignore", message="IProgress not found")
import numpy as np
import matplotlib.pyplot as plt
import minires as mr
from minires import analysis
from minires.analysis.inputs import load_batch
from minires.models import create

plt.rcParams["figure.dpi"] = 72
x_np, y_np = load_batch("embedded", 16, seed=0)
x, y = mr.tensor(x_np), mr.tensor(y_np)

def build(name, **kw):
    mr.manual_seed(0)
    return create(name, **kw).train()

profiles = {name: analysis.gradient_profile(build(name), x, y) for name in ("plain20", "resnet20", "plain56", "resnet56")}
for name, p in profiles.items():
    c = p["conv_ratio"]
    print(f"{name:9s} log10 ||dL/dW conv1|| / ||dL/dW last conv|| = {c['log10_ratio']:.2f}")"""),
    ("code", """fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for name, p in profiles.items():
    acts = [r for r in p["gradnorms"] if r["kind"] == "activation"]
    axes[0].semilogy([r["depth"] for r in acts], [r["norm"] for r in acts], ".-", label=name)
    params = [r for r in p["gradnorms"] if r["kind"] == "param" and "conv" in r["name"]]
    axes[1].semilogy([r["depth"] for r in params], [r["norm"] for r in params], ".-", label=name)
axes[0].set_xlabel("block l (input side = 0)"); axes[0].set_ylabel("||dL/dx_l||"); axes[0].set_title("residual stream")
axes[1].set_xlabel("conv layer"); axes[1].set_ylabel("||dL/dW||"); axes[1].set_title("weights")
for ax in axes: ax.legend(); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()"""),
    ("md", """## Skip and branch terms in ResNet-56

Per block, $\\partial L/\\partial x = S^\\top g + (\\partial F/\\partial x)^\\top g$. The skip term carries the upstream
gradient unchanged (identity blocks), the branch term adds to it."""),
    ("code", """records = analysis.trace_residual_stream(build("resnet56"), x, y, keep_tensors=False)
idx = [r.index for r in records]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
axes[0].semilogy(idx, [r.norms["grad_in"] for r in records], ".-", label="||dL/dx|| (sum)")
axes[0].semilogy(idx, [r.norms["skip"] for r in records], ".-", label="||skip term||")
axes[0].semilogy(idx, [r.norms["branch"] for r in records], ".-", label="||branch term||")
axes[0].legend(); axes[0].set_xlabel("block"); axes[0].set_title("ResNet-56 at initialisation")
axes[1].plot(idx, [r.cosine for r in records], ".-", label="cosine(skip, branch)")
axes[1].plot(idx, [r.blocked_fraction for r in records], ".-", label="fraction blocked by the post-add ReLU")
axes[1].legend(); axes[1].set_xlabel("block")
plt.tight_layout(); plt.show()
print("largest relative |skip + branch - dL/dx|:", max(r.identity_error for r in records))"""),
    ("md", """## Scaling the shortcut: $\\lambda^{\\text{depth}}$

With $S(x) = \\lambda x$ the skip-only path multiplies the gradient by $\\lambda$ at each of the $n$ blocks
(He et al. 2016, section 3.1)."""),
    ("code", """plt.figure(figsize=(6, 3.8))
for lam in (0.5, 0.9, 1.0, 1.1):
    p = analysis.gradient_profile(build("resnet20", shortcut_scale=lam), x, y)
    acts = [r for r in p["gradnorms"] if r["kind"] == "activation"]
    plt.semilogy([r["depth"] for r in acts], [r["norm"] for r in acts], ".-", label=f"lambda = {lam}")
plt.xlabel("block l"); plt.ylabel("||dL/dx_l||"); plt.legend(); plt.title("ResNet-20, scaled shortcuts"); plt.show()"""),
    ("md", """## Path lengths (Veit et al. 2016)

Sample $k$ of the $n$ branches, pass the gradient through those branches and through the shortcut elsewhere,
and measure it at the input of the first block. There are $\\binom{n}{k}$ paths of length $k$, so the total
contribution of a length is the count times the per-path magnitude. Veit et al. found, for a *trained*
ResNet-110, that the per-path magnitude falls fast with $k$ and the total is carried by short paths. At
initialisation (below) the per-path magnitude need not fall: each BN-normalised branch has a Jacobian norm above
1 (see the last figure), and the binomial count makes paths of intermediate length dominate."""),
    ("code", """res = analysis.path_length_distribution(build("resnet20"), x[:8], y[:8], samples=2, seed=0)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].bar(res.lengths, res.path_fraction); axes[0].set_title("share of paths of length k")
axes[1].semilogy(res.lengths, res.magnitude_mean, "o-"); axes[1].set_title("gradient magnitude per path")
axes[2].plot(res.lengths, res.log10_total, "o-"); axes[2].set_title("log10 (count x magnitude)")
for ax in axes: ax.set_xlabel("k")
plt.tight_layout(); plt.show()"""),
    ("md", "## Block Jacobians: $\\|I + \\partial F/\\partial x\\|_2$ against $\\|\\partial F/\\partial x\\|_2$, and plain blocks"),
    ("code", """jac_res = analysis.block_jacobian_norms(build("resnet20"), x[:4], iters=8)
jac_plain = analysis.block_jacobian_norms(build("plain20"), x[:4], iters=8)
plt.figure(figsize=(6, 3.6))
plt.plot([j.branch for j in jac_res], "o-", label="ResNet-20: ||dF/dx||")
plt.plot([j.residual for j in jac_res], "o-", label="ResNet-20: ||dS/dx + dF/dx||")
plt.plot([j.branch for j in jac_plain], "s--", label="plain-20: ||dF/dx||")
plt.xlabel("block"); plt.ylabel("spectral norm (power iteration)"); plt.legend(); plt.show()"""),
]

NB03 = [
    ("md", """# 03 · Train a CIFAR ResNet

A short run of ResNet-20 on a small slice of the embedded CIFAR-10 subset, written out step by step (loader,
SGD with momentum, a warm-up then cosine learning rate), with its curves, and the gradient flow of the trained
net next to the freshly initialised one. Settings are tiny so the notebook runs in CI; `minires train` runs the
real recipe."""),
    ("code", """import math, time, warnings
warnings.filterwarnings("ignore", message="IProgress not found")
import numpy as np
import matplotlib.pyplot as plt
import minires as mr
import minires.functional as F
from minires import analysis
from minires.models import create
from minires.data import Dataset, Loader, channel_stats, load_dataset
from minires.optim import SGD

plt.rcParams["figure.dpi"] = 72
full_train, full_test = load_dataset("embedded")
N_TRAIN, N_TEST, BATCH, EPOCHS, LR = 384, 200, 64, 3, 0.1
train_set = Dataset(full_train.images[:N_TRAIN], full_train.labels[:N_TRAIN], full_train.classes, "train slice")
test_set = Dataset(full_test.images[:N_TEST], full_test.labels[:N_TEST], full_test.classes, "test slice")
mean, std = channel_stats(train_set.images)
train_loader = Loader(train_set, BATCH, mean, std, train=True, seed=0, drop_last=True)
test_loader = Loader(test_set, 100, mean, std, train=False)
mr.manual_seed(0)
model = create("resnet20").train()
opt = SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
total = EPOCHS * len(train_loader)
print(f"{len(train_set)} training images, {len(train_loader)} steps per epoch, {total} steps")"""),
    ("code", """x_probe, y_probe = next(iter(test_loader.epoch(0)))[1:]
before = analysis.trace_residual_stream(model, x_probe[:32], y_probe[:32], keep_tensors=False)

def evaluate():
    model.eval(); wrong = 0; loss = 0.0
    with mr.no_grad():
        for _, xb, yb in test_loader.epoch(0):
            logits = model(mr.Tensor(xb))
            loss += float(F.cross_entropy(logits, mr.Tensor(yb)).item()) * len(yb)
            wrong += int((logits.numpy().argmax(1) != yb).sum())
    model.train()
    return loss / len(test_set), wrong / len(test_set)

history, step, start = [], 0, time.time()
for epoch in range(EPOCHS):
    for _, xb, yb in train_loader.epoch(epoch):
        lr = LR * min(1.0, (step + 1) / 4) * 0.5 * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(mr.Tensor(xb))
        loss = F.cross_entropy(logits, mr.Tensor(yb))
        opt.zero_grad(); loss.backward(); opt.step()
        history.append({"step": step, "lr": lr, "loss": loss.item(),
                        "err": float((logits.numpy().argmax(1) != yb).mean())})
        step += 1
    test_loss, test_err = evaluate()
    history[-1].update(test_loss=test_loss, test_err=test_err)
    print(f"epoch {epoch + 1}: train loss {np.mean([h['loss'] for h in history[-len(train_loader):]]):.3f}, "
          f"test loss {test_loss:.3f}, test error {100 * test_err:.1f}% ({time.time() - start:.0f} s)")"""),
    ("code", """fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
steps = [h["step"] for h in history]
axes[0].plot(steps, [h["loss"] for h in history], label="train (per batch)")
ends = [h for h in history if "test_loss" in h]
axes[0].plot([h["step"] for h in ends], [h["test_loss"] for h in ends], "o-", label="test")
axes[0].set_title("cross-entropy"); axes[0].legend()
axes[1].plot(steps, [100 * h["err"] for h in history], label="train (per batch)")
axes[1].plot([h["step"] for h in ends], [100 * h["test_err"] for h in ends], "o-", label="test")
axes[1].set_title("error (%)"); axes[1].legend()
axes[2].plot(steps, [h["lr"] for h in history]); axes[2].set_title("learning rate")
for ax in axes: ax.set_xlabel("step")
plt.tight_layout(); plt.show()"""),
    ("md", "## Gradient flow before and after training"),
    ("code", """after = analysis.trace_residual_stream(model, x_probe[:32], y_probe[:32], keep_tensors=False)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
for recs, label in ((before, "initialisation"), (after, f"after {EPOCHS} epochs")):
    axes[0].semilogy([r.index for r in recs], [r.norms["grad_in"] for r in recs], ".-", label=label)
    axes[1].plot([r.index for r in recs], [r.ratio for r in recs], ".-", label=label)
axes[0].set_title("||dL/dx_l||"); axes[1].set_title("||branch term|| / ||skip term||")
for ax in axes: ax.set_xlabel("block"); ax.legend()
plt.tight_layout(); plt.show()"""),
]

NB04 = [
    ("md", """# 04 · Gradient flow during training: plain against residual

`minires train --track-gradients N` records, every N steps and from that step's own backward pass, how the
gradient passes each block: for $y = \\sigma(F(x) + S(x))$ and $g$ the gradient at the sum, the norms of the
skip term $S^\\top g$, the branch term $(\\partial F/\\partial x)^\\top g$ and their sum $\\partial L/\\partial x$,
plus every weight's gradient norm and update-to-weight ratio. Here a plain-20 and a ResNet-20 train for a few
dozen steps on a slice of the embedded CIFAR-10 subset with tracking at every step, and the two heatmaps of
block by step are read side by side.

The heatmap's colour is $\\log_{10}$ of the block's ratio: $\\|\\text{branch}\\| / \\|\\text{skip}\\|$ for a
residual block, and for a plain block (no skip term) $\\|\\text{branch}\\| / \\|g\\|$: the block's input gradient
against what an identity shortcut would have passed on unchanged, so below 0 (blue) the block shrinks the
gradient it hands to the layers before it and above 0 (red) it amplifies it."""),
    ("code", """import os, tempfile, time, warnings
warnings.filterwarnings("ignore", message="IProgress not found")
import numpy as np
import matplotlib.pyplot as plt
from IPython.display import Image, display
from minires.train import TrainConfig, Trainer
from minires.train.plot import load_run, plot_layer_series, plot_ratio_heatmaps

plt.rcParams["savefig.dpi"] = 72
root = tempfile.mkdtemp(prefix="minires-nb04-")
runs = {}
for name in ("plain20", "resnet20"):
    start = time.time()
    config = TrainConfig(model=name, data="embedded", train_subset=320, test_subset=200, epochs=2, batch_size=32,
                         lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine", warmup_frac=0.1, seed=0,
                         track_gradients=1, out=os.path.join(root, name), progress=False, plot=False)
    result = Trainer(config, log=lambda *a: None).fit()
    runs[name] = load_run(config.out, name)
    print(f"{name}: {len(runs[name].gradients)} tracked steps, train loss {result['train_loss']:.3f}, "
          f"test accuracy {100 * result['test_acc']:.1f}% ({time.time() - start:.0f} s)")"""),
    ("md", """## The two heatmaps

One row per block (the first block at the top, next to the input), one column per step."""),
    ("code", """display(Image(plot_ratio_heatmaps(list(runs.values()), os.path.join(root, "heatmaps.png"))))"""),
    ("md", """How to read them. In the ResNet the input gradient of a block is the skip term plus the branch term: where the
skip term dominates (blue) the gradient reaching the early blocks is carried mostly by the identity paths,
whatever the branches do. The plain net has no such path: every block's input gradient *is* its branch term,
and the colour says whether the block passes the gradient down larger or smaller. Their product over the depth
is what reaches the first layers (a plain net with batch norm tends to *amplify* it at initialisation, Yang et
al. 2019); below, the numbers behind the two pictures."""),
    ("code", """def summary(run, record):
    blocks = record["blocks"]
    ratios = np.array([b["ratio"] for b in blocks])
    reach = blocks[0]["sum"] / blocks[-1]["sum"]
    return (f"step {record['step']:3d}: median log10 ratio {np.median(np.log10(ratios)):+.2f} "
            f"(first block {np.log10(ratios[0]):+.2f}, last {np.log10(ratios[-1]):+.2f}); "
            f"||dL/dx first block|| / ||dL/dx last block|| = {reach:.2f}")

for name, run in runs.items():
    print(name)
    for record in (run.gradients[0], run.gradients[-1]):
        print("  " + summary(run, record))"""),
    ("md", """## Per-layer gradient norms

The gradient norm of every convolution and linear weight over the steps (colour: depth, dark = near the input).
`update_ratios.png` of `minires plot` draws the update-to-weight ratios the same way."""),
    ("code", """display(Image(plot_layer_series(list(runs.values()), "grad_norm", os.path.join(root, "grad_norms.png"))))"""),
    ("md", """The same from the command line, for real lengths of training:

```bash
minires train --model plain56  --data PATH --track-gradients 50 --out runs/plain56
minires train --model resnet56 --data PATH --track-gradients 50 --out runs/resnet56
minires plot runs/plain56 runs/resnet56 --out figures/
```"""),
]

NOTEBOOKS = {
    "01_backprop_through_a_skip.ipynb": NB01,
    "02_gradient_norms.ipynb": NB02,
    "03_train_a_cifar_resnet.ipynb": NB03,
    "04_gradient_flow_during_training.ipynb": NB04,
}


def build(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for kind, src in cells:
        nb.cells.append(nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src))
    return nb


def execute(nb, timeout: int = 900) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in the repository root (figures embedded as PNG)."""
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": os.path.dirname(HERE)}})
    client.execute()
    return nb


def main(argv):
    wanted = argv[1:] or list(NOTEBOOKS)
    for name, cells in NOTEBOOKS.items():
        if not any(w in name for w in wanted):
            continue
        nb = execute(build(cells))
        nbformat.write(nb, os.path.join(HERE, name))
        print("wrote", name)


if __name__ == "__main__":
    main(sys.argv)
