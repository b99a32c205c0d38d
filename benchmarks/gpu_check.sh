#!/usr/bin/env bash
# One-shot GPU verification and measurement of minires on a machine with no network.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (default: $OUT, else ./gpu_out)
#
# Run from the repository root. Stages, each time-boxed so the whole script ends within
# BUDGET_S seconds (default 300: the device time left for the one run, less the machine's
# start) even if a stage hangs; BUDGET_S=530 suits a full 10-minute slot:
#   1. install the working tree without dependencies (pip -e, else PYTHONPATH=$PWD)
#   2. print GPU / driver / CuPy / PyTorch / NumPy versions
#   3. python -m pytest -m gpu (all GPU tests, no -x)              -> OUT/pytest_gpu.txt
#  3b. the NCCL data-parallel tests (tests/distributed/test_nccl_gpu.py: NCCL collectives, sync
#      batch norm and the gradient allreduce on CuPy arrays, a --distributed training run on the
#      GPU against the CPU) when mpi4py + mpiexec and CuPy's NCCL are there (mpi4py/mpich wheels
#      are installed from MPI_WHEELS, default gpu_data/wheels, if present) -> OUT/gpu_check.log
#   4. benchmarks/gpu_speed.py (minires vs PyTorch cuDNN, launches, CUDA graphs)
#                                                                  -> OUT/gpu_speed.{json,md}
#   5. ResNet-20 on CIFAR-10 through `minires train` for as many epochs as the remaining
#      time allows (paper recipe: SGD 0.1, momentum 0.9, wd 1e-4, batch 128, lr/10 at 50%
#      and 75% of the steps)                    -> OUT/train.log, OUT/train_metrics.jsonl
#   6. OUT/summary.md: what ran, what failed, the headline numbers.
# Everything printed is also in OUT/gpu_check.log. OUT holds at most 8 files.
#
# CIFAR-10 is looked for in gpu_data/cifar-10-batches-py, gpu_data/cifar-10-python.tar.gz,
# then rebuilt from gpu_data/cifar10-jpeg.tar.gz (+ make_cifar10.py) or
# ../shared/data/cifar10/ into /tmp; set CIFAR_DIR to override.
#
# Environment knobs: PYTHON (default python3), BUDGET_S (default 300), PYTEST_S (110), NCCL_S (120),
# SPEED_S (120), SPEED_ARGS (gpu_speed.py arguments; default '--rounds 3 --steps 5 --warmup 2'),
# TRAIN_EPOCHS (force a count),
# TRAIN_GRAPH (auto: CUDA-graph training when this run's tests and benchmark showed it right and
# faster; 1: always; 0: never).

set -u
OUT_DIR="${1:-${OUT:-./gpu_out}}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-300}"
PYTEST_S="${PYTEST_S:-110}"
SPEED_S="${SPEED_S:-120}"
START=$(date +%s)
REPO="$(pwd)"
LOG="$OUT_DIR/gpu_check.log"
SUMMARY="$OUT_DIR/summary.md"
export PYTHONUNBUFFERED=1

STATUS_LINES=()

exec > >(tee -a "$LOG") 2>&1

elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( BUDGET_S - $(elapsed) )); }
note() { echo "[gpu_check +$(elapsed)s] $*"; }
record() { STATUS_LINES+=("- $*"); note "$*"; write_summary; }
# OUT/summary.md is rewritten after every stage, so a run cut short still leaves one
write_summary() {
    {
        echo "# gpu_check $(date -u '+%Y-%m-%d %H:%M:%S') UTC, $(elapsed)s of ${BUDGET_S}s"
        echo
        echo "Command: bash benchmarks/gpu_check.sh (commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
        echo
        printf '%s\n' "${STATUS_LINES[@]}"
        echo
        [ -f "$OUT_DIR/gpu_speed.md" ] && cat "$OUT_DIR/gpu_speed.md"
        echo
        echo "pytest failures/errors:"
        grep -E '^(FAILED|ERROR)' "$OUT_DIR/pytest_gpu.txt" 2>/dev/null | head -40
    } >"$SUMMARY"
}

note "repo $(pwd), out $OUT_DIR, budget ${BUDGET_S}s, python $(command -v "$PY")"

# --- 0. CIFAR-10 for stage 5: found, or rebuilt from the JPEG archive in the background ---------
CIFAR_READY=""
CIFAR_PID=""
for c in "${CIFAR_DIR:-}" gpu_data/cifar-10-batches-py gpu_data/cifar-10-python.tar.gz data/cifar-10-batches-py \
         ../shared/data/cifar10/cifar-10-batches-py; do
    if [ -n "$c" ] && [ -e "$c" ]; then CIFAR_READY="$c"; break; fi
done
if [ -z "$CIFAR_READY" ]; then
    for d in gpu_data ../shared/data/cifar10 /work/shared/data/cifar10; do
        if [ -f "$d/make_cifar10.py" ] && [ -f "$d/cifar10-jpeg.tar.gz" ]; then
            rm -rf /tmp/minires_cifar
            timeout 200 "$PY" "$d/make_cifar10.py" /tmp/minires_cifar >/tmp/minires_make_cifar.log 2>&1 &
            CIFAR_PID=$!
            note "rebuilding CIFAR-10 from $d/cifar10-jpeg.tar.gz in the background (pid $CIFAR_PID)"
            break
        fi
    done
fi

# --- 1. install ---------------------------------------------------------------------------
if timeout 90 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >"/tmp/minires_pip.log" 2>&1 \
   && (cd /tmp && timeout 30 "$PY" -c "import minires, os, sys; sys.exit(0 if os.path.dirname(minires.__file__).startswith('$REPO') else 1)"); then
    record "install: pip install -e . ok"
else
    tail -5 /tmp/minires_pip.log
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
    record "install: pip -e failed or did not take; using PYTHONPATH=$REPO"
fi

# --- 2. versions ----------------------------------------------------------------------------
timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
timeout 60 "$PY" - <<'EOF' 2>&1 || true
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy
    print("cupy", cupy.__version__, "cuda runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "driver", cupy.cuda.runtime.driverGetVersion(), "devices", cupy.cuda.runtime.getDeviceCount())
    print("gpu", cupy.cuda.runtime.getDeviceProperties(0)["name"])
except Exception as exc:
    print("cupy: unavailable", type(exc).__name__, exc)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
          "cudnn", torch.backends.cudnn.version())
except Exception as exc:
    print("torch: unavailable", type(exc).__name__, exc)
import minires
print("minires", minires.__version__, minires.__file__, "cuda_available", minires.cuda_available())
EOF

# --- 3. GPU tests ---------------------------------------------------------------------------
PYTEST_OPTS=(-m gpu -v -rA --tb=short --durations=15 -p no:cacheprovider)
if "$PY" -c "import pytest_timeout" 2>/dev/null; then PYTEST_OPTS+=(--timeout 60); fi
if "$PY" -c "import xdist" 2>/dev/null; then PYTEST_OPTS+=(-n 8); fi
note "pytest ${PYTEST_OPTS[*]} (limit ${PYTEST_S}s)"
timeout -k 10 "$PYTEST_S" "$PY" -m pytest "${PYTEST_OPTS[@]}" tests >"$OUT_DIR/pytest_gpu.txt" 2>&1
rc=$?
tail -40 "$OUT_DIR/pytest_gpu.txt"
PYTEST_LINE="$(grep -E '(passed|failed|skipped|error|no tests ran).* in [0-9.]+s' "$OUT_DIR/pytest_gpu.txt" | tail -1)"
record "pytest -m gpu: rc=$rc ($([ $rc = 124 ] && echo 'TIMED OUT, ')$PYTEST_LINE)"

# --- 3b. NCCL data parallelism -------------------------------------------------------------------
nccl_ready() { "$PY" -c "import mpi4py, cupy.cuda.nccl" 2>/dev/null; }
WHEELS="${MPI_WHEELS:-gpu_data/wheels}"
if ! nccl_ready && [ -d "$WHEELS" ]; then
    timeout 90 "$PY" -m pip install -q --no-index --find-links "$WHEELS" mpi4py mpich >/tmp/minires_mpi_pip.log 2>&1 \
        || tail -3 /tmp/minires_mpi_pip.log
fi
if nccl_ready; then
    note "NCCL data-parallel tests (limit ${NCCL_S:-120}s)"
    timeout -k 10 "${NCCL_S:-120}" "$PY" -m pytest -m gpu -v -rA --tb=short -p no:cacheprovider \
        tests/distributed/test_nccl_gpu.py >/tmp/minires_nccl.txt 2>&1
    rc=$?
    tail -25 /tmp/minires_nccl.txt
    record "NCCL data parallel (tests/distributed/test_nccl_gpu.py): rc=$rc ($(grep -E '(passed|failed|skipped|error).* in [0-9.]+s' /tmp/minires_nccl.txt | tail -1))"
else
    record "NCCL data parallel: skipped (needs mpi4py and mpiexec: pip install -e '.[mpi]' or wheels in $WHEELS; and CuPy with NCCL)"
fi

# --- 4. speed benchmark -----------------------------------------------------------------------
LIMIT=$(( $(remaining) - 60 ))
[ "$LIMIT" -gt "$SPEED_S" ] && LIMIT=$SPEED_S
if [ "$LIMIT" -gt 30 ]; then
    note "gpu_speed.py (limit ${LIMIT}s)"
    # shellcheck disable=SC2086
    timeout -k 10 "$LIMIT" "$PY" benchmarks/gpu_speed.py --out "$OUT_DIR" ${SPEED_ARGS:---rounds 3 --steps 5 --warmup 2}
    rc=$?
    record "gpu_speed.py: rc=$rc$([ $rc = 124 ] && echo ' (TIMED OUT; gpu_speed.json holds the models finished)')"
else
    record "gpu_speed.py: skipped, only $(remaining)s left"
fi

# --- 5. train ResNet-20 on CIFAR-10 ------------------------------------------------------------
TRAIN_LEFT=$(( $(remaining) - 10 ))
if [ "$TRAIN_LEFT" -lt 45 ]; then
    record "training: skipped, only $(remaining)s left"
else
    DATA="$CIFAR_READY"
    if [ -z "$DATA" ] && [ -n "$CIFAR_PID" ]; then
        wait "$CIFAR_PID"
        [ -d /tmp/minires_cifar/cifar-10-batches-py ] && DATA=/tmp/minires_cifar/cifar-10-batches-py \
            || tail -5 /tmp/minires_make_cifar.log
    fi
    TRAIN_LEFT=$(( $(remaining) - 10 ))
    if [ -z "$DATA" ]; then
        record "training: no CIFAR-10 found (gpu_data/cifar-10-batches-py, gpu_data/*.tar.gz, ../shared/data/cifar10)"
    else
        # CUDA-graph training (MINIRES_CUDA_GRAPH=1) only when this run showed it correct and faster:
        # the graph-vs-eager trainer test passed and gpu_speed's captured ResNet-20 step matched eager
        GRAPH_MODE=0
        if [ "${TRAIN_GRAPH:-auto}" = 1 ]; then GRAPH_MODE=1
        elif [ "${TRAIN_GRAPH:-auto}" = auto ] && grep -qE "PASSED .*test_trainer_cuda_graph_mode_matches_eager|test_trainer_cuda_graph_mode_matches_eager PASSED" "$OUT_DIR/pytest_gpu.txt" 2>/dev/null \
             && "$PY" - "$OUT_DIR/gpu_speed.json" <<'EOF'
import json, sys
g = next(m for m in json.load(open(sys.argv[1]))["models"] if m["model"] == "resnet20")["graphs"]["train_step"]
sys.exit(0 if g.get("captured") and g.get("max_loss_diff", 1) < 1e-3 and g.get("speedup", 0) > 1.15 else 1)
EOF
        then GRAPH_MODE=1
        fi
        # epochs that fit: ResNet-20 step time from gpu_speed.json (x1.6 for loader, syncs and eval)
        EPOCHS="${TRAIN_EPOCHS:-$("$PY" - "$OUT_DIR/gpu_speed.json" "$TRAIN_LEFT" "$GRAPH_MODE" <<'EOF'
import json, sys
try:
    model = next(m for m in json.load(open(sys.argv[1]))["models"] if m["model"] == "resnet20")
    ms = model["train"]["minires_ms"]
    if sys.argv[3] == "1":
        ms = model["graphs"]["train_step"]["replay_ms"] + 2.0  # plus the loader's batch
except Exception:
    ms = 60.0
left = float(sys.argv[2]) - 25  # start-up, data load, kernel compilation, captures
epoch_s = 391 * ms / 1000 * 1.6 + 4
print(max(1, min(164, int(left // epoch_s))))
EOF
)}"
        rm -rf /tmp/minires_train
        note "training resnet20 on $DATA for $EPOCHS epochs, CUDA graph mode $GRAPH_MODE (limit ${TRAIN_LEFT}s)"
        MINIRES_CUDA_GRAPH=$GRAPH_MODE timeout -k 10 "$TRAIN_LEFT" "$PY" -m minires.cli train --model resnet20 --data "$DATA" --device cuda \
            --epochs "$EPOCHS" --batch-size 128 --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --schedule paper \
            --checkpoint-every 100000 --no-progress --no-plot --out /tmp/minires_train </dev/null >"$OUT_DIR/train.log" 2>&1 &
        TRAIN_PID=$!
        copy_train_files() {
            [ -f /tmp/minires_train/metrics.jsonl ] && cp /tmp/minires_train/metrics.jsonl "$OUT_DIR/train_metrics.jsonl"
            [ -f /tmp/minires_train/config.json ] && cp /tmp/minires_train/config.json "$OUT_DIR/train_config.json"
            return 0
        }
        # copy the epoch records as they appear, so a run cut off from outside keeps them
        while kill -0 "$TRAIN_PID" 2>/dev/null; do copy_train_files; sleep 3; done
        wait "$TRAIN_PID"
        rc=$?
        copy_train_files
        tail -30 "$OUT_DIR/train.log"
        LAST="$(tail -1 /tmp/minires_train/metrics.jsonl 2>/dev/null)"
        record "training resnet20, $EPOCHS epochs requested, CUDA graph mode $GRAPH_MODE: rc=$rc$([ $rc = 124 ] && echo ' (TIMED OUT)'); last epoch: ${LAST:-none}"
    fi
fi

# --- 6. summary ---------------------------------------------------------------------------------
write_summary
note "done in $(elapsed)s; files in $OUT_DIR:"
ls -la "$OUT_DIR"
exit 0
