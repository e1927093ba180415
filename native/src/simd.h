// 16-lane float vectors (GCC vector extensions) for the addon's CPU kernels (activations.cc,
// attention.cc, optim.cc): exp, and float32/bfloat16 loads and stores. The functions are always inlined, so
// they compile for the target of the kernel that calls them (AVX-512 there).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>

namespace reals {

// Whether the CPU runs the AVX-512 kernels the files above compile with target attributes.
inline bool cpuHasAvx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

constexpr int kLanes = 16;
typedef float Floats __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t Ints __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t Bits __attribute__((vector_size(kLanes * sizeof(uint32_t))));
typedef uint16_t Bf16Bits __attribute__((vector_size(kLanes * sizeof(uint16_t))));

// exp(v): n = round(v / ln 2) by the 1.5 * 2^23 rounding trick, r = v - n ln 2 in two parts (the
// high part has few enough bits that n * kLn2High is exact), exp(r) by its Taylor series to r^7
// (|r| <= ln 2 / 2: truncation under 1e-8 relative), times 2^n built in the exponent bits. v is
// clamped to [-87, 88] for that, where 2^n is a normal float, and exp is +inf above 88; NaN passes.
inline __attribute__((always_inline)) Floats expOf(Floats v) {
  constexpr float kLog2e = 1.4426950408889634f, kLn2High = 0.693145751953125f, kLn2Low = 1.4286068203094172e-06f;
  constexpr float kRound = 12582912.0f;
  const Floats unclamped = v;
  v = v < -87.0f ? Floats{} - 87.0f : v;
  v = v > 88.0f ? Floats{} + 88.0f : v;
  const Floats n = (v * kLog2e + kRound) - kRound;
  const Floats r = (v - n * kLn2High) - n * kLn2Low;
  Floats p = r * (1.0f / 5040) + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Bits scale = (Bits)((__builtin_convertvector(n, Ints) + 127) << 23);
  return unclamped > 88.0f ? Floats{} + __builtin_inff() : p * (Floats)scale;
}

// The sum of v's lanes, first to last, in Acc (float, or double where the lanes hold long sums).
template <typename Acc = float>
inline __attribute__((always_inline)) Acc sumLanes(Floats v) {
  Acc s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

inline __attribute__((always_inline)) Floats loadFloats(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline __attribute__((always_inline)) void storeFloats(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

inline __attribute__((always_inline)) Floats loadFloats(const at::BFloat16* p) {
  Bf16Bits h;
  std::memcpy(&h, p, sizeof h);
  return (Floats)(__builtin_convertvector(h, Bits) << 16);
}
// The bfloat16 bits of v in the low halves: round to nearest even, NaN to the quiet NaN 0x7fc0,
// c10::BFloat16's conversion.
inline __attribute__((always_inline)) Bits bfloat16Bits(Floats v) {
  const Bits bits = (Bits)v;
  const Bits rounded = (bits + (((bits >> 16) & 1u) + 0x7fffu)) >> 16;
  return v != v ? Bits{} + 0x7fc0u : rounded;
}
inline __attribute__((always_inline)) void storeFloats(at::BFloat16* p, Floats v) {
  const Bf16Bits h = __builtin_convertvector(bfloat16Bits(v), Bf16Bits);
  std::memcpy(p, &h, sizeof h);
}

}  // namespace reals
