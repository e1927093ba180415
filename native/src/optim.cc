// One Adam/AdamW update, and one EMA update, of a float32 parameter as one pass over memory, on the CPU. The
// per-parameter loop of src/optim/adam.ts (PyTorch's `_single_tensor_adam[w]`) runs nine libtorch
// ops per parameter, each a pass over parameter-sized tensors (two of them allocate one): for
// SiT-B/2's 130M parameters 0.35 s of CPU per step on one Zen 5 EPYC thread, 7% of its training
// step; this kernel takes 0.10 s. Each element is read and written once, in registers, by the same
// float32 operations in the same order as those ops (as libtorch's vectorized kernels: add with
// alpha and addcmul as fused multiply-adds, every other operation rounded on its own), which gave
// the op-by-op results bit for bit there (test/optim/adam.test.ts bounds the difference by the
// roundings that other kernels may contract). The EMA of DiT's update_ema, ema.mul_(decay).add_(param,
// 1 - decay), is two passes over the averaged copy in libtorch (0.06-0.09 s a step for SiT-B/2 on the
// Zen 5); the kernel does both ops' float32 operations in one. Compiled for AVX-512 and used where the
// CPU has it, as activations.cc; elsewhere, and for other dtypes, devices, layouts and amsgrad, adam.ts
// and ema.ts run the ops.
#include "common.h"

#include "simd.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <initializer_list>

namespace reals {
namespace {

#define REALS_AVX512 __attribute__((target("avx512f"), optimize("fp-contract=off")))

// What the update takes besides the tensors, as libtorch rounds its scalars: float32.
struct AdamScalars {
  float paramFactor;  // AdamW's 1 - lr * weightDecay (1: none)
  float l2;           // Adam's weightDecay, added to the gradient as weightDecay * param (0: none)
  bool maximize;
  float beta1, oneMinusBeta1, beta2, oneMinusBeta2;
  float negativeStepSize;  // -lr / (1 - beta1^step)
  float biasCorrection2Sqrt;
  float eps;
};

REALS_AVX512 inline Floats fma(Floats a, Floats b, Floats c) {
  return (Floats)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
}

// The ops of adam.ts's updateParam on 16 elements:
//   g = -grad (maximize);  g = g.add(param, l2);  param.mul_(paramFactor)
//   expAvg.mul_(beta1).add_(g, 1 - beta1);  expAvgSq.mul_(beta2).addcmul_(g, g, 1 - beta2)
//   denom = expAvgSq.sqrt().div(biasCorrection2Sqrt).add_(eps);  param.addcdiv_(expAvg, denom, -stepSize)
// add with alpha is libtorch's vec::fmadd(other, alpha, self), addcmul self + (value * t1) * t2 with
// the last two operations fused, addcdiv self + (value * t1) / t2; nothing else is contracted (the
// attribute), so that the kernel does not depend on what the compiler fuses.
REALS_AVX512 inline void adamLanes(Floats& p, Floats g, Floats& m, Floats& v, const AdamScalars& s) {
  if (s.maximize) g = -g;
  if (s.l2 != 0.0f) g = fma(p, Floats{} + s.l2, g);
  if (s.paramFactor != 1.0f) p = p * s.paramFactor;
  m = fma(g, Floats{} + s.oneMinusBeta1, m * s.beta1);
  v = fma(s.oneMinusBeta2 * g, g, v * s.beta2);
  const Floats denom = (Floats)_mm512_maskz_sqrt_ps(0xffff, (__m512)v) / s.biasCorrection2Sqrt + s.eps;
  p = p + s.negativeStepSize * m / denom;
}

REALS_AVX512 void adamRange(float* param, const float* grad, float* expAvg, float* expAvgSq, int64_t begin, int64_t end, const AdamScalars& s) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    Floats p = loadFloats(param + i), m = loadFloats(expAvg + i), v = loadFloats(expAvgSq + i);
    adamLanes(p, loadFloats(grad + i), m, v, s);
    storeFloats(param + i, p);
    storeFloats(expAvg + i, m);
    storeFloats(expAvgSq + i, v);
  }
  if (i == end) return;
  // The last partial vector through the same lanes, padded with ones (sqrt and the division stay finite).
  alignas(64) float p[kLanes], g[kLanes], m[kLanes], v[kLanes];
  std::fill(p, p + kLanes, 1.0f), std::fill(g, g + kLanes, 1.0f), std::fill(m, m + kLanes, 1.0f), std::fill(v, v + kLanes, 1.0f);
  const int64_t rest = end - i;
  std::copy(param + i, param + end, p), std::copy(grad + i, grad + end, g), std::copy(expAvg + i, expAvg + end, m), std::copy(expAvgSq + i, expAvgSq + end, v);
  Floats pv = loadFloats(p), mv = loadFloats(m), vv = loadFloats(v);
  adamLanes(pv, loadFloats(g), mv, vv, s);
  storeFloats(p, pv), storeFloats(m, mv), storeFloats(v, vv);
  std::copy(p, p + rest, param + i), std::copy(m, m + rest, expAvg + i), std::copy(v, v + rest, expAvgSq + i);
}

// ema.mul_(decay).add_(param, oneMinusDecay): a product rounded on its own, then libtorch's add with
// alpha, vec::fmadd(param, alpha, ema).
REALS_AVX512 void emaRange(float* ema, const float* param, int64_t begin, int64_t end, float decay, float oneMinusDecay) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) storeFloats(ema + i, fma(loadFloats(param + i), Floats{} + oneMinusDecay, loadFloats(ema + i) * decay));
  if (i == end) return;
  alignas(64) float e[kLanes] = {}, p[kLanes] = {};
  std::copy(ema + i, ema + end, e), std::copy(param + i, param + end, p);
  storeFloats(e, fma(loadFloats(p), Floats{} + oneMinusDecay, loadFloats(e) * decay));
  std::copy(e, e + (end - i), ema + i);
}

#undef REALS_AVX512

// body(begin, end) over [0, n) in parallel, in chunks of whole vectors, so that only the tensor's last
// vector is partial.
template <typename Body>
void forEachVectorChunk(int64_t n, Body&& body) {
  at::parallel_for(0, (n + kLanes - 1) / kLanes, 4096, [&](int64_t begin, int64_t end) { body(begin * kLanes, std::min(end * kLanes, n)); });
}

// Whether the kernels take these tensors: float32, contiguous, on the CPU, of one shape, on a CPU with AVX-512.
bool fusable(std::initializer_list<const at::Tensor*> tensors) {
  if (!cpuHasAvx512()) return false;
  const at::Tensor& first = **tensors.begin();
  for (const at::Tensor* t : tensors) {
    if (!t->device().is_cpu() || t->scalar_type() != at::kFloat || !t->is_contiguous() || t->is_sparse() || t->sizes() != first.sizes()) return false;
  }
  return true;
}

// adamStep(param, grad, expAvg, expAvgSq, paramFactor, l2, maximize, beta1, beta2, stepSize,
// biasCorrection2Sqrt, eps): the update in place, true; or false, untouched, where the kernel does
// not take the tensors (not all float32, contiguous, on the CPU, of one shape; no AVX-512).
napi_value AdamStepCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "adamStep", [&]() -> napi_value {
    const at::Tensor& param = unwrapTensor(env, args[0], "adamStep(param)");
    const at::Tensor& grad = unwrapTensor(env, args[1], "adamStep(grad)");
    const at::Tensor& expAvg = unwrapTensor(env, args[2], "adamStep(expAvg)");
    const at::Tensor& expAvgSq = unwrapTensor(env, args[3], "adamStep(expAvgSq)");
    if (!fusable({&param, &grad, &expAvg, &expAvgSq})) return makeBool(env, false);
    const double beta1 = getDouble(env, args[7], "adamStep(beta1)"), beta2 = getDouble(env, args[8], "adamStep(beta2)");
    const AdamScalars s{
        static_cast<float>(getDouble(env, args[4], "adamStep(paramFactor)")),
        static_cast<float>(getDouble(env, args[5], "adamStep(l2)")),
        getBool(env, args[6], "adamStep(maximize)"),
        static_cast<float>(beta1), static_cast<float>(1 - beta1), static_cast<float>(beta2), static_cast<float>(1 - beta2),
        static_cast<float>(-getDouble(env, args[9], "adamStep(stepSize)")),
        static_cast<float>(getDouble(env, args[10], "adamStep(biasCorrection2Sqrt)")),
        static_cast<float>(getDouble(env, args[11], "adamStep(eps)")),
    };
    float* p = param.data_ptr<float>();
    const float* g = grad.data_ptr<float>();
    float* m = expAvg.data_ptr<float>();
    float* v = expAvgSq.data_ptr<float>();
    forEachVectorChunk(param.numel(), [&](int64_t begin, int64_t end) { adamRange(p, g, m, v, begin, end, s); });
    return makeBool(env, true);
  });
}

// emaStep(ema, param, decay): ema = decay * ema + (1 - decay) * param in place, true; or false,
// untouched, where the kernel does not take the tensors (as adamStep).
napi_value EmaStepCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "emaStep", [&]() -> napi_value {
    const at::Tensor& ema = unwrapTensor(env, args[0], "emaStep(ema)");
    const at::Tensor& param = unwrapTensor(env, args[1], "emaStep(param)");
    if (!fusable({&ema, &param})) return makeBool(env, false);
    const double decay = getDouble(env, args[2], "emaStep(decay)");
    float* e = ema.data_ptr<float>();
    const float* p = param.data_ptr<float>();
    forEachVectorChunk(ema.numel(), [&](int64_t begin, int64_t end) { emaRange(e, p, begin, end, static_cast<float>(decay), static_cast<float>(1 - decay)); });
    return makeBool(env, true);
  });
}

}  // namespace

void initOptim(napi_env env, napi_value exports) {
  exportFunction(env, exports, "adamStep", AdamStepCall);
  exportFunction(env, exports, "emaStep", EmaStepCall);
}

}  // namespace reals
