"""Very deep nets: resnet1202 forward + backward at batch 8 on CPU, with its peak memory measured.

Run with ``python -m pytest tests/models/test_depth.py -m slow -s`` to see the numbers.
The measurement runs in a fresh process so the peak is the model's own, not the test session's.
"""

import json
import subprocess
import sys
import textwrap

import pytest

MEASURE = textwrap.dedent("""
    import json, resource, sys, time, tracemalloc
    import numpy as np
    sys.setrecursionlimit(200)  # the autograd engine must not recurse through 1202 layers
    import minires as mr
    import minires.functional as F
    import minires.models as models

    name, batch = sys.argv[1], int(sys.argv[2])
    mr.manual_seed(0)
    model = models.create(name)
    params = models.count_parameters(model)
    rng = np.random.default_rng(0)
    x = mr.tensor(rng.standard_normal((batch, 3, 32, 32)).astype(np.float32))
    y = mr.tensor(rng.integers(0, 10, batch))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    forward_s = time.perf_counter() - start
    _, forward_peak = tracemalloc.get_traced_memory()
    loss.backward()
    total_s = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grads_ok = all(p.grad is not None and np.isfinite(p.grad).all() for p in model.parameters())
    print(json.dumps({"model": name, "batch": batch, "params": params, "loss": float(loss.item()),
                      "grads_ok": grads_ok, "forward_s": forward_s, "forward_backward_s": total_s,
                      "tracemalloc_peak_forward_mb": forward_peak / 2**20, "tracemalloc_peak_mb": peak / 2**20,
                      "rss_before_mb": base_rss / 1024,
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def measure(name, batch):
    result = subprocess.run([sys.executable, "-c", MEASURE, name, str(batch)], capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_deep_net_backward_needs_no_recursion():
    stats = measure("resnet110", 2)  # 110 layers under a recursion limit of 200
    assert stats["grads_ok"]
    assert stats["params"] == 1_727_962


@pytest.mark.slow
def test_resnet1202_forward_backward_batch8_on_cpu():
    stats = measure("resnet1202", 8)
    print("\nresnet1202 batch 8:", json.dumps(stats, indent=1))
    assert stats["grads_ok"]
    assert stats["params"] == 19_421_274
    assert 0.0 < stats["loss"] < 100.0  # finite (1202 un-zeroed residual sums make large logits at init)
    assert stats["tracemalloc_peak_mb"] < 8192
