# Sourced by the study scripts: the computation every committed cell ran with. One thread each, and
# OpenBLAS's SkylakeX kernels: the Intel Xeon that ran the first cells used them, and they decide
# how float32 matmul sums are ordered. With them any x86-64 CPU with AVX-512 reruns those cells to
# the last digit (checked on a Zen 5 EPYC, where OpenBLAS picks Cooperlake; docs/reproduction.md).
# OPENBLAS_CORETYPE is set here whatever the caller's environment says (some set it for their own
# reasons); STUDY_OPENBLAS_CORETYPE chooses another kernel set, which makes a set of cells of its
# own, never to be paired with these.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OPENBLAS_CORETYPE="${STUDY_OPENBLAS_CORETYPE:-SkylakeX}"
if [ "$OPENBLAS_CORETYPE" = SkylakeX ] && ! grep -qw avx512f /proc/cpuinfo; then
  echo "study: this CPU has no AVX-512 for OpenBLAS's SkylakeX kernels, which the committed cells ran with; STUDY_OPENBLAS_CORETYPE=Haswell makes a set of cells of its own" >&2
  exit 1
fi
