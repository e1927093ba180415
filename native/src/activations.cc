// The tanh GELU (SiT's and DiT's approx_gelu) and SiLU (the VAE's ResNet blocks, the alignment heads,
// adaLN) as one fused pass over the tensor, forward and backward, on the CPU: the GELU for float32
// and bfloat16, SiLU for bfloat16 (see Silu below). libtorch 1.13's kernels go through Sleef and,
// for bfloat16, convert around every step: on one Sapphire Rapids thread the tanh GELU of a
// [1, 256, 1536] bfloat16 input takes 2.2 ms (float32 0.7 ms), a third of a SiT-S/2 forward at
// batch 1 under autocast, and SiLU of 4M bfloat16 elements (the alignment heads' hidden layer at
// batch 4) 12.3 ms. These kernels take 0.26 and 2.7 ms, and round once: bfloat16 is computed in
// float32 and rounded at the end. Both are x s with a logistic s:
//   gelu(x) = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3),
//   silu(x) = x / (1 + exp(-x)),
// with one exp per element on 16-lane vectors, compiled for AVX-512 and used where the CPU has it
// (libtorch's kernels elsewhere). The gradients take 1 - s as exp(.) s, which does not cancel
// as s -> 1. Other dtypes and devices go to libtorch's gelu and silu, and the backward of a
// backward (create_graph) to differentiable libtorch ops.
#include "common.h"

#include "simd.h"

#include <ATen/Parallel.h>

#include <cstring>

namespace reals {
namespace {

constexpr float kBeta = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kKappa = 0.044715f;

// gelu(x) = x s with s = 1 / (1 + exp(-2u)), and gelu'(x) = s + 2 x u'(x) s (1 - s).
struct GeluTanhMath {
  static Floats expArg(Floats x) { return -2.0f * kBeta * (x + kKappa * x * x * x); }
  // d(-expArg)/dx: 2 u'(x).
  static Floats slope(Floats x) { return 2.0f * kBeta * (1.0f + 3.0f * kKappa * x * x); }
};
// silu(x) = x s with s = 1 / (1 + exp(-x)), and silu'(x) = s + x s (1 - s).
struct SiluMath {
  static Floats expArg(Floats x) { return -x; }
  static Floats slope(Floats) { return Floats{} + 1.0f; }
};

// x s with s = 1 / (1 + e), e = exp(expArg(x)), and its derivative s (1 + x slope(x) (1 - s)), where
// 1 - s is e s, and 1 where e is beyond 1e30 (s is then below 1e-30, or 0 when e is inf).
template <typename Math>
inline __attribute__((always_inline)) Floats valueOf(Floats x) { return x / (1.0f + expOf(Math::expArg(x))); }

template <typename Math>
inline __attribute__((always_inline)) Floats gradOf(Floats x, Floats grad) {
  const Floats e = expOf(Math::expArg(x));
  const Floats s = 1.0f / (1.0f + e);
  const Floats oneMinusS = e > 1e30f ? Floats{} + 1.0f : e * s;
  return grad * s * (1.0f + x * Math::slope(x) * oneMinusS);
}

// out = f(x), or out = grad * f'(x) when grad is given, over [begin, end) in whole vectors; the
// tail goes through zero-padded copies.
template <typename Math, typename T>
inline __attribute__((always_inline)) void activationRange(const T* x, const T* grad, T* out, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    const Floats v = loadFloats(x + i);
    storeFloats(out + i, grad == nullptr ? valueOf<Math>(v) : gradOf<Math>(v, loadFloats(grad + i)));
  }
  if (i == end) return;
  T xs[kLanes] = {}, gs[kLanes] = {}, os[kLanes];
  std::memcpy(xs, x + i, (end - i) * sizeof(T));
  if (grad != nullptr) std::memcpy(gs, grad + i, (end - i) * sizeof(T));
  storeFloats(os, grad == nullptr ? valueOf<Math>(loadFloats(xs)) : gradOf<Math>(loadFloats(xs), loadFloats(gs)));
  std::memcpy(out + i, os, (end - i) * sizeof(T));
}

// AVX-512 only: built for AVX2, GCC turns the 16-lane selects into scalar compares and the kernels
// take 2.4-2.8 ms for the [1, 256, 1536] GELU, slower than libtorch's; other CPUs use libtorch's.
#define REALS_AVX512 __attribute__((target("avx512f")))
REALS_AVX512 void geluFloat(const float* x, const float* grad, float* out, int64_t begin, int64_t end) { activationRange<GeluTanhMath>(x, grad, out, begin, end); }
REALS_AVX512 void geluBf16(const at::BFloat16* x, const at::BFloat16* grad, at::BFloat16* out, int64_t begin, int64_t end) { activationRange<GeluTanhMath>(x, grad, out, begin, end); }
REALS_AVX512 void siluBf16(const at::BFloat16* x, const at::BFloat16* grad, at::BFloat16* out, int64_t begin, int64_t end) { activationRange<SiluMath>(x, grad, out, begin, end); }
#undef REALS_AVX512

// An activation's kernels, and libtorch's ops for what the kernels do not take.
struct GeluTanh {
  static constexpr const char* kName = "gelu";
  static constexpr const char* kInput = "gelu(input)";
  static constexpr bool kFusesFloat32 = true;
  static constexpr auto kFloat = geluFloat;
  static constexpr auto kBf16 = geluBf16;
  static at::Tensor libtorch(const at::Tensor& x) { return at::gelu(x, "tanh"); }
  static at::Tensor differentiableBackward(const at::Tensor& grad, const at::Tensor& x) { return at::gelu_backward(grad, x, "tanh"); }
};
struct Silu {
  static constexpr const char* kName = "silu";
  static constexpr const char* kInput = "silu(input)";
  // float32 SiLU stays libtorch's, bit for bit PyTorch's: the kernel's last-ulp differences would
  // show in the float32 VAE's parity with diffusers, and libtorch's float32 SiLU is within 1.3x of it.
  static constexpr bool kFusesFloat32 = false;
  static constexpr auto kBf16 = siluBf16;
  static at::Tensor libtorch(const at::Tensor& x) { return at::silu(x); }
  // at::silu_backward has no derivative; autograd's own silu formula under create_graph is this one.
  static at::Tensor differentiableBackward(const at::Tensor& grad, const at::Tensor& x) {
    const at::Tensor s = at::sigmoid(x);
    return grad * s * (1 + x * (1 - s));
  }
};

constexpr int64_t kGrain = 32768;

template <typename Activation>
bool fusable(const at::Tensor& x) {
  return cpuHasAvx512() && x.device().is_cpu() &&
         (x.scalar_type() == at::kBFloat16 || (Activation::kFusesFloat32 && x.scalar_type() == at::kFloat));
}

// t with the strides of like (a dense tensor of the same shape), copied only when they differ.
at::Tensor laidOutLike(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  at::Tensor copy = at::empty_like(like);
  copy.copy_(t);
  return copy;
}

// f(input), or gradOutput * f'(input) when gradOutput is defined. A dense input (contiguous, or
// channels-last as a bfloat16 convolution's output is) is read in memory order and the output
// keeps its layout: an elementwise op need not know which element is which.
template <typename Activation>
at::Tensor fused(const at::Tensor& input, const at::Tensor& gradOutput = {}) {
  const at::Tensor x = input.is_non_overlapping_and_dense() ? input : input.contiguous();
  const at::Tensor g = gradOutput.defined() ? laidOutLike(gradOutput.to(x.scalar_type()), x) : at::Tensor();
  at::Tensor out = at::empty_like(x);
  at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    if constexpr (Activation::kFusesFloat32) {
      if (x.scalar_type() == at::kFloat) {
        Activation::kFloat(x.data_ptr<float>(), g.defined() ? g.data_ptr<float>() : nullptr, out.data_ptr<float>(), begin, end);
        return;
      }
    }
    Activation::kBf16(x.data_ptr<at::BFloat16>(), g.defined() ? g.data_ptr<at::BFloat16>() : nullptr, out.data_ptr<at::BFloat16>(), begin, end);
  });
  return out;
}

template <typename Activation>
struct Fused : public torch::autograd::Function<Fused<Activation>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x) {
    ctx->save_for_backward({x});
    return fused<Activation>(x);
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    // Under create_graph the gradient must itself be differentiable.
    if (at::GradMode::is_enabled()) return {Activation::differentiableBackward(grads[0], x)};
    return {fused<Activation>(x, grads[0])};
  }
};

// activation(x), fused where it can be (see the top of the file).
template <typename Activation>
napi_value ActivationCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, Activation::kName, [&]() -> napi_value {
    const at::Tensor& x = unwrapTensor(env, args[0], Activation::kInput);
    if (!fusable<Activation>(x)) return wrapTensor(env, Activation::libtorch(x));
    if (gradWanted({&x})) return wrapTensor(env, Fused<Activation>::apply(x));
    return wrapTensor(env, fused<Activation>(x));
  });
}

napi_value FusedActivationsCall(napi_env env, napi_callback_info) { return makeBool(env, cpuHasAvx512()); }

}  // namespace

void initActivations(napi_env env, napi_value exports) {
  exportFunction(env, exports, "fusedActivations", FusedActivationsCall);
  exportFunction(env, exports, "geluTanh", ActivationCall<GeluTanh>);
  exportFunction(env, exports, "silu", ActivationCall<Silu>);
}

}  // namespace reals
