#!/usr/bin/env bash
# The device checks still open on a GPU, as one run that fits a 15-minute device lease (about
# 9.7 min of commands). Each step has its own timeout and writes under $OUT, so a slow step cannot
# eat the others' time:
#   1. Gatys, 500 iterations at 512 px, with torch.compile inside the captured CUDA-graph
#      iteration, against the PyTorch tutorial baseline in the same run;
#   2. the CUDA tests of the fast paths (tests/test_torch_gatys_fast.py, tests/test_torch_fastpath.py);
#   3. the fast-network inference variants (gpu_fast_explore.py), including io_convs='s2d';
#   4. training at 256 px (batch 16/32): channels_last end to end (cat reflection pad, fused norm)
#      and compile=True, which compiles the whole training loss inside the captured step.
# Results and the reasons behind each step: docs/BENCHMARKS.md.
# Usage (device tool, timeout_s=600): bash benchmarks/gpu_next.sh   (OUT defaults to ./gpu_next_out)
set -u
OUT=${OUT:-gpu_next_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1

echo "== 1. Gatys compile+graph (budget 185 s)"
timeout 200 python3 benchmarks/gpu_gatys_explore.py --out "$OUT/gatys_compile.json" --budget-s 185 \
    --only "baseline,cuda_graph+channels_last,cuda_graph+compile" > "$OUT/gatys_compile.log" 2>&1
echo "   exit $?"; grep -E "impl=" "$OUT/gatys_compile.log" | cut -c1-200

echo "== 2. CUDA tests of the fast paths (100 s)"
RESTY_TEST_DEVICE=cuda timeout 100 python3 -m pytest -q -p no:cacheprovider \
    tests/test_torch_gatys_fast.py tests/test_torch_fastpath.py > "$OUT/tests.log" 2>&1
echo "   exit $?"; grep -E "passed|failed|error" "$OUT/tests.log" | tail -3

echo "== 3. fast network variants incl. io_convs='s2d' (135 s)"
timeout 135 python3 benchmarks/gpu_fast_explore.py --out "$OUT/fast.json" --budget 125 --no-train \
    --only "eager tf32,graph fp16 pad8 (NCHW),s2d,compile+graph fp16 pad8 (NCHW)" > "$OUT/fast.log" 2>&1
echo "   exit $?"; tail -5 "$OUT/fast.log" | cut -c1-200

echo "== 4. training: channels_last end to end, compiled loss in the captured step (140 s)"
timeout 140 python3 benchmarks/gpu_fast_explore.py --out "$OUT/train.json" --budget 130 --no-compile \
    --only "train " > "$OUT/train.log" 2>&1
echo "   exit $?"; grep -E "^\[(train|fail|skip)\]" "$OUT/train.log" | cut -c1-200
