#!/usr/bin/env bash
# The numerical tests again, with the kernels another x86-64 machine may run: OpenBLAS's Haswell
# kernels (AVX2: what a CPU without AVX-512 gets, and what some environments force with
# OPENBLAS_CORETYPE), ATen's AVX2 kernels, and oneDNN without AMX (AVX512-BF16 only, as on an EPYC).
# Parity tolerances must follow from the computation, not from the machine that wrote the
# fixtures; this catches a tolerance that holds on one machine only, on whichever one CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# Fixed thread counts, as in `npm test`: tests compare reruns to the last bit (README, Threads).
export OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX512_CORE_BF16 REALS_ADAPTIVE_THREADS=0
node --import tsx --test --test-concurrency=1 \
  test/torch/*.test.ts test/nn/*.test.ts test/optim/*.test.ts test/models/*.test.ts \
  test/diffusion/*.test.ts test/onnx/*.test.ts test/train/precision.test.ts
