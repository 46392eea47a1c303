#!/usr/bin/env bash
# Issue 7's device checks still open after the session of 2026-11-28 (it had no GPU), prepared to
# run once on the lent H200 within its 15 minutes (about 9.5 min of commands; each step has its own
# timeout and writes under $OUT, so a slow step cannot eat the others' time):
#   1. Gatys 500 iterations at 512 px with torch.compile inside the captured iteration (untimed so
#      far), against the tutorial in the same run;
#   2. the CUDA tests of the fast paths (tests/test_torch_gatys_fast.py and test_torch_fastpath.py
#      have never passed cleanly on a GPU);
#   3. the fast-network variants (gpu_fast_explore.py), with the untimed io_convs='s2d'.
# Usage (device tool): bash benchmarks/gpu_next.sh   (OUT defaults to ./gpu_next_out)
set -u
OUT=${OUT:-gpu_next_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" >> "$OUT/gpu.txt" 2>&1

echo "== 1. Gatys compile+graph (budget 220 s)"
timeout 240 python3 benchmarks/gpu_gatys_explore.py --out "$OUT/gatys_compile.json" --budget-s 220 \
    --only "baseline,cuda_graph+channels_last,cuda_graph+compile" > "$OUT/gatys_compile.log" 2>&1
echo "   exit $?"; grep -E "impl=" "$OUT/gatys_compile.log" | cut -c1-200

echo "== 2. CUDA tests of the fast paths (120 s)"
RESTY_TEST_DEVICE=cuda timeout 120 python3 -m pytest -q -p no:cacheprovider \
    tests/test_torch_gatys_fast.py tests/test_torch_fastpath.py > "$OUT/tests.log" 2>&1
echo "   exit $?"; grep -E "passed|failed|error" "$OUT/tests.log" | tail -3

echo "== 3. fast network variants incl. io_convs='s2d' (200 s)"
timeout 200 python3 benchmarks/gpu_fast_explore.py --out "$OUT/fast.json" --budget 185 --no-train \
    --only "eager tf32,graph fp16 pad8 (NCHW),s2d,compile+graph fp16 pad8 (NCHW)" > "$OUT/fast.log" 2>&1
echo "   exit $?"; tail -5 "$OUT/fast.log" | cut -c1-200
