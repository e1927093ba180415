// adaLN-Zero's elementwise work in a DiT/SiT block (models.py's modulate and its gated residuals) as
// one pass over memory each, forward and backward, on the CPU:
//   modulatedLayerNorm(x, shift, scale) = layer_norm(x) * (1 + scale) + shift   x [N, T, D], shift, scale [N, D]
//   gatedResidual(x, gate, y)           = x + gate * y                          x, y [N, T, D], gate [N, D]
// The op path runs 3 ops for the first (the norm, the product, the sum; under autocast also the cast
// to bfloat16 of the Linear it feeds) and 2 for the second, each a pass over [N, T, D], and its
// backward as many again, with the reductions over T for shift's, scale's and gate's gradients and the
// casts of the gradients. PyTorch's profiler put these ops (add, mul, layer_norm, their backward, their
// casts) at about 0.9 s of a 6.8 s SiT-B/2 training step (batch 8, bf16, one Zen 5 thread).
// Values are computed in float32 and rounded once at the end: under bfloat16 autocast the op path
// rounds 1 + scale and gate * y to bfloat16 first, so the kernels are the more accurate there; in
// float32 gatedResidual does the op path's operations (a product, then a sum), and the norm's
// statistics differ from libtorch's in the last bits (two float32 passes over the row). Under CPU
// bfloat16 autocast modulatedLayerNorm returns bfloat16, as the Linear that takes it would cast it.
// The kernels take x in float32 (the residual stream), D a multiple of 16, on AVX-512 CPUs; elsewhere
// the caller (src/torch/fused-adaln.ts) runs the op path. The backward of a backward (create_graph)
// runs the gradients' formulas in libtorch's ops, which autograd can differentiate.
#include "common.h"

#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

namespace reals {
namespace {

#define REALS_AVX512 __attribute__((target("avx512f"), optimize("fp-contract=off")))

// Rows of modulatedLayerNorm: y = (x - mean) * rstd * factor + shift, factor = 1 + scale of the row's
// sample, with the row's mean and rstd saved for the backward.
template <typename Out>
inline __attribute__((always_inline)) void modulateRows(const float* x, const float* factor, const float* shift, Out* y, float* mean, float* rstd,
                                                        int64_t tokens, int64_t dim, float eps, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const float* xr = x + row * dim;
    const float* a = factor + (row / tokens) * dim;
    const float* b = shift + (row / tokens) * dim;
    Floats sum{};
    for (int64_t d = 0; d < dim; d += kLanes) sum += loadFloats(xr + d);
    const float mu = sumLanes(sum) / dim;
    Floats squares{};
    for (int64_t d = 0; d < dim; d += kLanes) {
      const Floats c = loadFloats(xr + d) - mu;
      squares += c * c;
    }
    const float rs = 1.0f / std::sqrt(sumLanes(squares) / dim + eps);
    mean[row] = mu;
    rstd[row] = rs;
    for (int64_t d = 0; d < dim; d += kLanes) storeFloats(y + row * dim + d, (loadFloats(xr + d) - mu) * rs * loadFloats(a + d) + loadFloats(b + d));
  }
}

// The backward of rows [begin, end) of one sample: with g = dy * factor and x^ = (x - mean) * rstd,
// dx = rstd (g - mean(g) - x^ mean(g x^)), and this block's sums over its rows of dy x^ (scale's
// gradient) and dy (shift's) added to gradScale and gradShift.
template <typename Grad>
inline __attribute__((always_inline)) void modulateBackwardRows(const float* x, const Grad* dy, const float* factor, const float* mean, const float* rstd,
                                                                float* dx, float* gradScale, float* gradShift, int64_t dim, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const float* xr = x + row * dim;
    const Grad* gr = dy + row * dim;
    const float mu = mean[row], rs = rstd[row];
    Floats sumG{}, sumGX{};
    for (int64_t d = 0; d < dim; d += kLanes) {
      const Floats xhat = (loadFloats(xr + d) - mu) * rs;
      const Floats grad = loadFloats(gr + d);
      const Floats g = grad * loadFloats(factor + d);
      sumG += g;
      sumGX += g * xhat;
      storeFloats(gradScale + d, loadFloats(gradScale + d) + grad * xhat);
      storeFloats(gradShift + d, loadFloats(gradShift + d) + grad);
    }
    const float meanG = sumLanes(sumG) / dim, meanGX = sumLanes(sumGX) / dim;
    for (int64_t d = 0; d < dim; d += kLanes) {
      const Floats xhat = (loadFloats(xr + d) - mu) * rs;
      const Floats g = loadFloats(gr + d) * loadFloats(factor + d);
      storeFloats(dx + row * dim + d, rs * (g - meanG - xhat * meanGX));
    }
  }
}

// Rows of gatedResidual: h = x + gate * y.
template <typename In>
inline __attribute__((always_inline)) void gateRows(const float* x, const float* gate, const In* y, float* h, int64_t tokens, int64_t dim, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    const float* g = gate + (row / tokens) * dim;
    for (int64_t d = 0; d < dim; d += kLanes) {
      const int64_t i = row * dim + d;
      storeFloats(h + i, loadFloats(x + i) + loadFloats(g + d) * loadFloats(y + i));
    }
  }
}

// The backward of rows [begin, end) of one sample: dy = dh * gate, and the block's sum of dh * y
// (gate's gradient) added to gradGate; x's gradient is dh itself.
template <typename In>
inline __attribute__((always_inline)) void gateBackwardRows(const float* dh, const float* gate, const In* y, In* dy, float* gradGate, int64_t dim, int64_t begin, int64_t end) {
  for (int64_t row = begin; row < end; ++row) {
    for (int64_t d = 0; d < dim; d += kLanes) {
      const int64_t i = row * dim + d;
      const Floats grad = loadFloats(dh + i);
      storeFloats(dy + i, grad * loadFloats(gate + d));
      storeFloats(gradGate + d, loadFloats(gradGate + d) + grad * loadFloats(y + i));
    }
  }
}

REALS_AVX512 void modulateFloat(const float* x, const float* a, const float* b, float* y, float* m, float* r, int64_t t, int64_t d, float eps, int64_t begin, int64_t end) { modulateRows(x, a, b, y, m, r, t, d, eps, begin, end); }
REALS_AVX512 void modulateBf16(const float* x, const float* a, const float* b, at::BFloat16* y, float* m, float* r, int64_t t, int64_t d, float eps, int64_t begin, int64_t end) { modulateRows(x, a, b, y, m, r, t, d, eps, begin, end); }
REALS_AVX512 void modulateBackwardFloat(const float* x, const float* dy, const float* a, const float* m, const float* r, float* dx, float* gs, float* gb, int64_t d, int64_t begin, int64_t end) { modulateBackwardRows(x, dy, a, m, r, dx, gs, gb, d, begin, end); }
REALS_AVX512 void modulateBackwardBf16(const float* x, const at::BFloat16* dy, const float* a, const float* m, const float* r, float* dx, float* gs, float* gb, int64_t d, int64_t begin, int64_t end) { modulateBackwardRows(x, dy, a, m, r, dx, gs, gb, d, begin, end); }
REALS_AVX512 void gateFloat(const float* x, const float* g, const float* y, float* h, int64_t t, int64_t d, int64_t begin, int64_t end) { gateRows(x, g, y, h, t, d, begin, end); }
REALS_AVX512 void gateBf16(const float* x, const float* g, const at::BFloat16* y, float* h, int64_t t, int64_t d, int64_t begin, int64_t end) { gateRows(x, g, y, h, t, d, begin, end); }
REALS_AVX512 void gateBackwardFloat(const float* dh, const float* g, const float* y, float* dy, float* gg, int64_t d, int64_t begin, int64_t end) { gateBackwardRows(dh, g, y, dy, gg, d, begin, end); }
REALS_AVX512 void gateBackwardBf16(const float* dh, const float* g, const at::BFloat16* y, at::BFloat16* dy, float* gg, int64_t d, int64_t begin, int64_t end) { gateBackwardRows(dh, g, y, dy, gg, d, begin, end); }

#undef REALS_AVX512

// Elements per task of the forwards; the backwards split each sample's T rows into blocks of this
// many rows, one task each with its own partial sums of the [N, D] gradients, added up after.
constexpr int64_t kGrain = 32768;
constexpr int64_t kRowsPerBlock = 32;

int64_t blockCount(int64_t samples, int64_t tokens) { return samples * ((tokens + kRowsPerBlock - 1) / kRowsPerBlock); }

// The per-sample sums of the per-block partial sums [blocks, ...]: [N, ...].
at::Tensor sumBlocks(const at::Tensor& partial, int64_t samples) {
  std::vector<int64_t> shape{samples, -1};
  for (int64_t i = 1; i < partial.dim(); ++i) shape.push_back(partial.size(i));
  return partial.view(shape).sum(1);
}

// Calls body(sample, firstRow, endRow, block) for every block of kRowsPerBlock rows of each sample, in parallel.
template <typename Body>
void forEachBlock(int64_t samples, int64_t tokens, int64_t dim, Body&& body) {
  const int64_t blocksPerSample = blockCount(1, tokens);
  const int64_t grain = std::max<int64_t>(1, kGrain / (kRowsPerBlock * dim));
  at::parallel_for(0, samples * blocksPerSample, grain, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t n = block / blocksPerSample, first = n * tokens + (block % blocksPerSample) * kRowsPerBlock;
      body(n, first, std::min(first + kRowsPerBlock, (n + 1) * tokens), block);
    }
  });
}

at::Tensor asFloatRows(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

// The gradients by libtorch's ops, themselves differentiable (the backward of a backward), with
// x^ = (x - mean) rstd and g = dy (1 + scale): dx = rstd (g - mean(g) - x^ mean(g x^)),
// d shift = sum over T of dy, d scale = sum over T of dy x^.
torch::autograd::tensor_list modulatedLayerNormGradsOps(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps, const at::Tensor& gradOut) {
  const at::Tensor centred = x - x.mean({-1}, true);
  const at::Tensor rstd = (centred.square().mean({-1}, true) + eps).rsqrt();
  const at::Tensor xhat = centred * rstd;
  const at::Tensor dy = gradOut.to(at::kFloat);
  const at::Tensor g = dy * (scale.to(at::kFloat).unsqueeze(1) + 1);
  const at::Tensor dx = rstd * (g - g.mean({-1}, true) - xhat * (g * xhat).mean({-1}, true));
  return {dx.to(x.scalar_type()), dy.sum({1}).to(shift.scalar_type()), (dy * xhat).sum({1}).to(scale.scalar_type())};
}

// dx = dh, d gate = sum over T of dh y, dy = dh gate, by libtorch's ops (differentiable).
torch::autograd::tensor_list gatedResidualGradsOps(const at::Tensor& gate, const at::Tensor& y, const at::Tensor& gradOut) {
  const at::Tensor dh = gradOut.to(at::kFloat);
  return {gradOut, (dh * y.to(at::kFloat)).sum({1}).to(gate.scalar_type()), (dh * gate.to(at::kFloat).unsqueeze(1)).to(y.scalar_type())};
}

struct ModulateResult {
  at::Tensor y, factor, mean, rstd;
};

// The forward of both paths: y in bfloat16 (bf16Out) or float32, and what the backward needs (factor = 1 + scale in float32).
ModulateResult modulateForward(const at::Tensor& input, const at::Tensor& shift, const at::Tensor& scale, double eps, bool bf16Out) {
  const at::Tensor x = input.contiguous(), shiftRows = asFloatRows(shift);
  const at::ScalarType outDtype = bf16Out ? at::kBFloat16 : at::kFloat;
  const int64_t samples = x.size(0), tokens = x.size(1), dim = x.size(2), rows = samples * tokens;
  ModulateResult r{at::empty(x.sizes(), x.options().dtype(outDtype)), asFloatRows(scale) + 1, at::empty({rows}, x.options()), at::empty({rows}, x.options())};
  const float* xp = x.data_ptr<float>();
  const float *a = r.factor.data_ptr<float>(), *b = shiftRows.data_ptr<float>();
  float *m = r.mean.data_ptr<float>(), *s = r.rstd.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / dim), [&](int64_t begin, int64_t end) {
    if (outDtype == at::kBFloat16) modulateBf16(xp, a, b, r.y.data_ptr<at::BFloat16>(), m, s, tokens, dim, static_cast<float>(eps), begin, end);
    else modulateFloat(xp, a, b, r.y.data_ptr<float>(), m, s, tokens, dim, static_cast<float>(eps), begin, end);
  });
  return r;
}

struct ModulatedLayerNorm : public torch::autograd::Function<ModulatedLayerNorm> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale, double eps,
                            bool bf16Out) {
    ModulateResult r = modulateForward(x, shift, scale, eps, bf16Out);
    ctx->save_for_backward({x, shift, scale, r.factor, r.mean, r.rstd});
    ctx->saved_data["eps"] = eps;
    return r.y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &shift = saved[1], &scale = saved[2], &factor = saved[3], &mean = saved[4], &rstd = saved[5];
    const double eps = ctx->saved_data["eps"].toDouble();
    if (at::GradMode::is_enabled()) {
      auto g = modulatedLayerNormGradsOps(input, shift, scale, eps, grads[0]);
      return {g[0], g[1], g[2], at::Tensor(), at::Tensor()};
    }
    const bool bf16Grad = grads[0].scalar_type() == at::kBFloat16;
    const at::Tensor dy = bf16Grad ? grads[0].contiguous() : grads[0].to(at::kFloat).contiguous();
    const at::Tensor x = input.contiguous();
    const int64_t samples = x.size(0), tokens = x.size(1), dim = x.size(2);
    at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
    at::Tensor partial = at::zeros({blockCount(samples, tokens), 2, dim}, x.options());
    const float *xp = x.data_ptr<float>(), *a = factor.data_ptr<float>(), *m = mean.data_ptr<float>(), *s = rstd.data_ptr<float>();
    float *dxp = dx.data_ptr<float>(), *pp = partial.data_ptr<float>();
    forEachBlock(samples, tokens, dim, [&](int64_t n, int64_t first, int64_t end, int64_t block) {
      float* gradScale = pp + block * 2 * dim;
      if (bf16Grad) modulateBackwardBf16(xp, dy.data_ptr<at::BFloat16>(), a + n * dim, m, s, dxp, gradScale, gradScale + dim, dim, first, end);
      else modulateBackwardFloat(xp, dy.data_ptr<float>(), a + n * dim, m, s, dxp, gradScale, gradScale + dim, dim, first, end);
    });
    const at::Tensor sums = sumBlocks(partial, samples);
    return {dx, sums.select(1, 1).to(shift.scalar_type()), sums.select(1, 0).to(scale.scalar_type()), at::Tensor(), at::Tensor()};
  }
};

struct GatedResidual : public torch::autograd::Function<GatedResidual> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gate, const at::Tensor& y) {
    const at::Tensor gateRows = asFloatRows(gate);
    ctx->save_for_backward({gate, y, gateRows});
    return gateForward(x, gateRows, y);
  }
  // The forward of both paths, with gate in float32 rows.
  static at::Tensor gateForward(const at::Tensor& input, const at::Tensor& gateRows, const at::Tensor& other) {
    const at::Tensor x = input.contiguous(), y = other.contiguous();
    const int64_t tokens = x.size(1), dim = x.size(2), rows = x.size(0) * tokens;
    at::Tensor h = at::empty_like(x, at::MemoryFormat::Contiguous);
    const float *xp = x.data_ptr<float>(), *g = gateRows.data_ptr<float>();
    float* hp = h.data_ptr<float>();
    at::parallel_for(0, rows, std::max<int64_t>(1, kGrain / dim), [&](int64_t begin, int64_t end) {
      if (y.scalar_type() == at::kBFloat16) gateBf16(xp, g, y.data_ptr<at::BFloat16>(), hp, tokens, dim, begin, end);
      else gateFloat(xp, g, y.data_ptr<float>(), hp, tokens, dim, begin, end);
    });
    return h;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &gate = saved[0], &input = saved[1], &gateRows = saved[2];
    if (at::GradMode::is_enabled()) return gatedResidualGradsOps(gate, input, grads[0]);
    const at::Tensor y = input.contiguous();
    const at::Tensor dh = grads[0].to(at::kFloat).contiguous();
    const int64_t samples = y.size(0), tokens = y.size(1), dim = y.size(2);
    at::Tensor dy = at::empty_like(y, at::MemoryFormat::Contiguous);
    at::Tensor partial = at::zeros({blockCount(samples, tokens), dim}, dh.options());
    const float *dhp = dh.data_ptr<float>(), *g = gateRows.data_ptr<float>();
    float* pp = partial.data_ptr<float>();
    forEachBlock(samples, tokens, dim, [&](int64_t n, int64_t first, int64_t end, int64_t block) {
      if (y.scalar_type() == at::kBFloat16) gateBackwardBf16(dhp, g + n * dim, y.data_ptr<at::BFloat16>(), dy.data_ptr<at::BFloat16>(), pp + block * dim, dim, first, end);
      else gateBackwardFloat(dhp, g + n * dim, y.data_ptr<float>(), dy.data_ptr<float>(), pp + block * dim, dim, first, end);
    });
    return {grads[0], sumBlocks(partial, samples).to(gate.scalar_type()), dy};
  }
};

bool isFloatOrBf16(const at::Tensor& t) { return t.scalar_type() == at::kFloat || t.scalar_type() == at::kBFloat16; }

// Whether the kernels take x [N, T, D] (float32) with per-sample vectors [N, D] and, for
// gatedResidual, y [N, T, D] (float32 or bfloat16): CPU, AVX-512, D a multiple of 16. Other layouts
// are copied to contiguous ones first (a pass the op path would make too).
bool fusable(const at::Tensor& x, std::initializer_list<const at::Tensor*> perSample, const at::Tensor* y) {
  if (!cpuHasAvx512() || !x.device().is_cpu() || x.scalar_type() != at::kFloat || x.dim() != 3) return false;
  if (x.size(2) % kLanes != 0 || x.numel() == 0) return false;
  for (const at::Tensor* v : perSample) {
    if (!v->device().is_cpu() || !isFloatOrBf16(*v) || v->dim() != 2 || v->size(0) != x.size(0) || v->size(1) != x.size(2)) return false;
  }
  return y == nullptr || (y->device().is_cpu() && isFloatOrBf16(*y) && y->sizes() == x.sizes());
}

// modulatedLayerNorm(x, shift, scale, eps): the fused result, or null where the kernel does not take
// the inputs (the caller runs the op path).
napi_value ModulatedLayerNormCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "modulatedLayerNorm", [&]() -> napi_value {
    const at::Tensor& x = unwrapTensor(env, args[0], "modulatedLayerNorm(x)");
    const at::Tensor& shift = unwrapTensor(env, args[1], "modulatedLayerNorm(shift)");
    const at::Tensor& scale = unwrapTensor(env, args[2], "modulatedLayerNorm(scale)");
    const double eps = getDouble(env, args[3], "modulatedLayerNorm(eps)");
    if (!fusable(x, {&shift, &scale}, nullptr)) return makeNull(env);
    const bool bf16Out = cpuBf16Autocast();
    if (gradWanted({&x, &shift, &scale})) return wrapTensor(env, ModulatedLayerNorm::apply(x, shift, scale, eps, bf16Out));
    return wrapTensor(env, modulateForward(x, shift, scale, eps, bf16Out).y);
  });
}

// gatedResidual(x, gate, y): the fused result, or null where the kernel does not take the inputs.
napi_value GatedResidualCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "gatedResidual", [&]() -> napi_value {
    const at::Tensor& x = unwrapTensor(env, args[0], "gatedResidual(x)");
    const at::Tensor& gate = unwrapTensor(env, args[1], "gatedResidual(gate)");
    const at::Tensor& y = unwrapTensor(env, args[2], "gatedResidual(y)");
    if (!fusable(x, {&gate}, &y)) return makeNull(env);
    if (gradWanted({&x, &gate, &y})) return wrapTensor(env, GatedResidual::apply(x, gate, y));
    return wrapTensor(env, GatedResidual::gateForward(x, asFloatRows(gate), y));
  });
}

}  // namespace

void initAdaLN(napi_env env, napi_value exports) {
  exportFunction(env, exports, "modulatedLayerNorm", ModulatedLayerNormCall);
  exportFunction(env, exports, "gatedResidual", GatedResidualCall);
}

}  // namespace reals
