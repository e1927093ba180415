// silu(group_norm(x)) in one kernel, for the VAE's ResNet blocks and its last norm (diffusers'
// norm1/norm2 then nonlinearity, conv_norm_out then conv_act), under CPU bfloat16 autocast without
// gradients: what decoding latents to images (every sample) and encoding images to latents run.
// There a conv's bfloat16 output meets float32 norm weights, and the op path casts it to float32,
// normalizes in float32, applies SiLU in float32 and casts again for the next conv: four passes,
// 32 bytes of memory traffic per element. PyTorch's profiler put group_norm, silu and the casts at
// 43% of SD-VAE's 256 px decode in bf16 on one Zen 5 thread (the convolutions at 56%). Here each
// group is read three times in bfloat16 (its mean, its variance about the mean, then the output)
// and written once, in bfloat16: 8 bytes per element. Values are computed in float32 (the sums of
// 1,024-element blocks in float32, added in double) and rounded once, as the conv that takes the
// result would round it; the op path's float32 output, rounded by that conv, can differ from it in
// the last bfloat16 bit. Training keeps the op path (autograd), as do float32 and CPUs without AVX-512.
#include "common.h"

#include "simd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace reals {
namespace {

#define REALS_AVX512 __attribute__((target("avx512f")))

constexpr int64_t kBlock = 1024;  // elements summed in float32 before the sum goes to double

// The 16 values at x[i..) as float32, zeros past `end` (the tail of a range).
inline __attribute__((always_inline)) Floats loadUpTo(const at::BFloat16* x, int64_t i, int64_t end) {
  if (i + kLanes <= end) return loadFloats(x + i);
  at::BFloat16 tail[kLanes] = {};
  std::memcpy(tail, x + i, (end - i) * sizeof(at::BFloat16));
  return loadFloats(tail);
}

// The sum over x[0, count) of f(x[i]).
template <typename F>
inline __attribute__((always_inline)) double sumOver(const at::BFloat16* x, int64_t count, F&& f) {
  double total = 0.0;
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t end = std::min(count, begin + kBlock);
    Floats block{};
    int64_t i = begin;
    for (; i + kLanes <= end; i += kLanes) block += f(loadFloats(x + i));
    if (i < end) {
      const Ints lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
      block += lanes < static_cast<int32_t>(end - i) ? f(loadUpTo(x, i, end)) : Floats{};
    }
    total += sumLanes<double>(block);
  }
  return total;
}

// One group: `channels` channels of `spatial` elements each at x, normalized with the group's
// statistics, scaled and shifted per channel (weight, bias: the group's first channel's, or null),
// then SiLU, into y.
REALS_AVX512 void groupNormSiluGroup(const at::BFloat16* x, at::BFloat16* y, int64_t channels, int64_t spatial, const float* weight,
                                     const float* bias, float eps) {
  const int64_t count = channels * spatial;
  const float mean = static_cast<float>(sumOver(x, count, [](Floats v) { return v; }) / count);
  const double squares = sumOver(x, count, [mean](Floats v) {
    const Floats c = v - mean;
    return c * c;
  });
  const float rstd = static_cast<float>(1.0 / std::sqrt(squares / count + eps));
  for (int64_t c = 0; c < channels; ++c) {
    // (x - mean) (rstd w) + b: centred first, so that a mean far from zero cancels in x - mean
    // (exact for nearby values) and not in a rounded x rstd w.
    const float a = rstd * (weight == nullptr ? 1.0f : weight[c]);
    const float b = bias == nullptr ? 0.0f : bias[c];
    const at::BFloat16* xc = x + c * spatial;
    at::BFloat16* yc = y + c * spatial;
    int64_t i = 0;
    for (; i + kLanes <= spatial; i += kLanes) {
      const Floats v = (loadFloats(xc + i) - mean) * a + b;
      storeFloats(yc + i, v / (1.0f + expOf(-v)));
    }
    if (i < spatial) {
      const Floats v = (loadUpTo(xc, i, spatial) - mean) * a + b;
      at::BFloat16 out[kLanes];
      storeFloats(out, v / (1.0f + expOf(-v)));
      std::memcpy(yc + i, out, (spatial - i) * sizeof(at::BFloat16));
    }
  }
}

#undef REALS_AVX512

constexpr int64_t kGrain = 32768;

// Whether the kernel takes the call: bfloat16 x [N, C, ...] on the CPU with AVX-512, C a multiple of
// groups, float32 [C] weight and bias (or none), under CPU bfloat16 autocast, no gradient wanted.
bool fusable(const at::Tensor& x, int64_t groups, const at::Tensor* weight, const at::Tensor* bias) {
  if (!cpuHasAvx512() || !x.device().is_cpu() || x.scalar_type() != at::kBFloat16 || x.dim() < 2 || x.numel() == 0) return false;
  if (groups < 1 || x.size(1) % groups != 0) return false;
  if (!cpuBf16Autocast()) return false;
  for (const at::Tensor* p : {weight, bias}) {
    if (p == nullptr) continue;
    if (!p->device().is_cpu() || p->scalar_type() != at::kFloat || p->dim() != 1 || p->size(0) != x.size(1)) return false;
  }
  return !gradWanted({&x, weight, bias});
}

// groupNormSilu(x, groups, weight, bias, eps): silu(group_norm(x)) in bfloat16, or null where the
// kernel does not take the call (the caller runs the op path).
napi_value GroupNormSiluCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "groupNormSilu", [&]() -> napi_value {
    const at::Tensor& input = unwrapTensor(env, args[0], "groupNormSilu(x)");
    const int64_t groups = getInt64(env, args[1], "groupNormSilu(groups)");
    const at::Tensor* weight = typeOf(env, args[2]) == napi_null ? nullptr : &unwrapTensor(env, args[2], "groupNormSilu(weight)");
    const at::Tensor* bias = typeOf(env, args[3]) == napi_null ? nullptr : &unwrapTensor(env, args[3], "groupNormSilu(bias)");
    const double eps = getDouble(env, args[4], "groupNormSilu(eps)");
    if (!fusable(input, groups, weight, bias)) return makeNull(env);
    const at::Tensor x = input.contiguous();
    const at::Tensor w = weight == nullptr ? at::Tensor() : weight->contiguous(), b = bias == nullptr ? at::Tensor() : bias->contiguous();
    at::Tensor y = at::empty(x.sizes(), x.options());
    const int64_t channels = x.size(1) / groups, spatial = x.numel() / (x.size(0) * x.size(1)), groupSize = channels * spatial;
    const at::BFloat16* xp = x.data_ptr<at::BFloat16>();
    at::BFloat16* yp = y.data_ptr<at::BFloat16>();
    const float* wp = w.defined() ? w.data_ptr<float>() : nullptr;
    const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
    at::parallel_for(0, x.size(0) * groups, std::max<int64_t>(1, kGrain / groupSize), [&](int64_t begin, int64_t end) {
      for (int64_t group = begin; group < end; ++group) {
        const int64_t firstChannel = (group % groups) * channels;
        groupNormSiluGroup(xp + group * groupSize, yp + group * groupSize, channels, spatial, wp == nullptr ? nullptr : wp + firstChannel,
                           bp == nullptr ? nullptr : bp + firstChannel, static_cast<float>(eps));
      }
    });
    return wrapTensor(env, y);
  });
}

}  // namespace

void initGroupNorm(napi_env env, napi_value exports) { exportFunction(env, exports, "groupNormSilu", GroupNormSiluCall); }

}  // namespace reals
