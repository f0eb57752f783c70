#!/usr/bin/env bash
# One call for a session lent a GPU (issues 17 and 18): the CUDA tests, then the GPU benchmarks, in about
# 10 minutes on one H200 (estimated). It runs under the device image's python3 (torch, scipy, scikit-learn,
# h5py, safetensors, tqdm, matplotlib, pytest are there; vtk and PyHessian are not: their tests and rows are left
# out), from the repository root:
#
#     bash scripts/gpu_session.sh            # on the device machine: results under $OUT (else out/)
#     DEVICE=cpu bash scripts/gpu_session.sh # here, to try it first (the CUDA tests skip, tiny sizes)
set -u
out=$(realpath -m "${OUT:-out}")
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} LANDSCAPE_CACHE=$out/cache TQDM_DISABLE=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
# the tests that use CUDA where there is one (the rest of the suite runs in CI)
timeout 120 python3 -m pytest -q -p no:cacheprovider -k "cuda" tests/landscape/core/test_objective.py \
    tests/landscape/scans/test_scan.py tests/landscape/paths/test_curves.py tests/landscape/compat/test_pyhessian.py tests/landscape/test_transformers.py \
    2>&1 | tail -15 | tee "$out/cuda_tests.txt"
size=device
[ "$device" = cpu ] && size=tiny
(cd scripts && timeout 420 python3 bench_gpu.py --device "$device" --size "$size" --out "$out") \
    > "$out/bench_gpu.log" 2>&1
echo "bench_gpu exit $?"
tail -30 "$out/bench_gpu.log"
# cuDNN autotuning in a process of its own (cuDNN keeps the first plan it found for a shape): ResNet-56 only
(cd scripts && timeout 180 python3 bench_gpu.py --device "$device" --size "$size" --out "$out" --autotune) \
    > "$out/bench_gpu_autotuned.log" 2>&1
echo "bench_gpu --autotune exit $?"
tail -12 "$out/bench_gpu_autotuned.log"
