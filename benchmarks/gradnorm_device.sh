#!/usr/bin/env bash
# One device session: a CUDA smoke check of minires, the gradient-norm benchmark and a short
# full-CIFAR degradation run. Usage: OUT=dir [QUICK=1] bash benchmarks/gradnorm_device.sh
set -u
export PYTHONPATH=$PWD MPLBACKEND=Agg
PY=${PY:-python3}
OUT=${OUT:-/tmp/devout}
mkdir -p "$OUT/res"
log="$OUT/res/device.log"
exec > >(tee -a "$log") 2>&1
date; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
$PY -c "import numpy, sys; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
$PY -c "import cupy; print('cupy', cupy.__version__)" || true
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" || true
DEV=cpu
if timeout 60 $PY - <<'PYEOF'
import numpy as np, minires as mr, minires.functional as F
from minires.models.registry import create
assert mr.cuda_available()
x = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32); y = np.arange(8) % 10
grads = []
for dev in ("cpu", "cuda"):
    mr.manual_seed(0); net = create("resnet20").to(dev)
    loss = F.cross_entropy(net(mr.tensor(x, device=dev)), mr.tensor(y, device=dev)); loss.backward()
    grads.append(np.concatenate([p.grad.get().ravel() if dev == "cuda" else p.grad.ravel() for p in net.parameters()]))
err = np.abs(grads[0] - grads[1]).max() / np.abs(grads[0]).max()
print("cuda vs cpu resnet20 grads, max rel err", err); assert err < 1e-3
PYEOF
then DEV=cuda; fi
echo "DEVICE=$DEV"
if [ "${QUICK:-0}" = 1 ]; then
  timeout 300 $PY benchmarks/gradnorm.py --quick --device $DEV --fresh --out "$OUT/res" || echo "gradnorm failed"
  timeout 300 $PY benchmarks/degradation_gpu.py --device $DEV --data embedded --models resnet20 plain20 --epochs 1 \
      --train-subset 64 --test-subset 50 --batch-size 32 --out "$OUT/res" || echo "degradation failed"
else
  timeout 220 $PY benchmarks/gradnorm.py --device $DEV --fresh --seeds 20:5 56:5 110:5 --default-seeds 3 \
      --scale-depths 20 56 --scale-seeds 2 --path-model resnet56 --path-batch 32 --path-samples 3 \
      --time-budget 140 --out "$OUT/res" || echo "gradnorm failed"
  if [ ! -d /tmp/c10/cifar-10-batches-py ]; then timeout 90 $PY data/make_cifar10.py /tmp/c10 || echo "cifar build failed"; fi
  timeout 200 $PY benchmarks/degradation_gpu.py --device $DEV --data /tmp/c10/cifar-10-batches-py \
      --time-budget 160 --epochs 30 --out "$OUT/res" || echo "degradation failed"
fi
date
tar -czf "$OUT/results.tar.gz" -C "$OUT" res
cp "$log" "$OUT/device.log"
