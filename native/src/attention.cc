// softmax(q k^T * scale) v on the CPU as one fused pass, forward and backward, for float32 and
// bfloat16 tensors [..., L, E] (E a multiple of 16 up to 128), without a mask or dropout: what the
// transformers of SiT, DiT and DINOv2 run. libtorch 1.13 has no fused attention, and its math path
// writes the L x S scores, the softmax and their bfloat16 roundings to memory, with a bfloat16
// softmax kernel that converts around every step. Here, flash-attention style, each task takes one
// (batch, head), its queries in tiles of 64 against the keys in tiles of 64: the scores of a tile,
// an online softmax (running max and sum per query, the partial output rescaled when the max
// grows) and the weighted sum of the values, all in float32 in the caches; inputs are read once
// into float32 tiles and the output is rounded once. The backward recomputes the probabilities
// from the saved log-sum-exp per query (FlashAttention-2): with D = rowsum(dO o),
//   dV = P^T dO,  dP = dO V^T,  dS = P (dP - D),  dQ = scale dS K,  dK = scale dS^T Q.
// The products are register-tiled FMAs on 16-lane float32 vectors, compiled for AVX-512 (other CPUs
// keep the math path, as for activations.cc); bfloat16, forward and backward, uses AVX512-BF16 dot
// products where the CPU has them (the backward's float32 FMAs lost to oneDNN's bfloat16 products
// on an AMD EPYC, 61 against 42 ms for SiT-B/2's [8, 12, 256, 64]). Under create_graph the backward
// is differentiable libtorch ops. The kernel is not always the faster path (bench/README.md): with
// AMX, oneDNN's matmuls make the math path faster in bfloat16 (amxMatmuls below); and below a tile
// of queries or keys its per-(batch, head) work outweighs what it saves (the tiny SiT's
// [32, 4, 16, 32]: 3 against 0.6 ms). So F.scaledDotProductAttention sends here float32 and, without
// AMX, bfloat16, each with at least kMinFusedTokens queries and keys.
#include "common.h"

#include "simd.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <cpuid.h>
#include <immintrin.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <cstring>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace reals {
namespace {

constexpr int kTile = 64;              // queries and keys per tile
constexpr int kTileVectors = kTile / kLanes;
constexpr int kMaxHeadVectors = 8;     // E up to 128
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#define REALS_AVX512 __attribute__((target("avx512f")))

// C[r][0..kTile) = sum_e A[r][e] BT[e][c], rows a multiple of 4: A is [rows][E] (lda E), BT is
// [E][ldb] from the tile's first column. 4 rows x 4 vectors of accumulators.
template <int kHeadVectors>
REALS_AVX512 inline void productTile(const float* a, const float* bt, int64_t ldb, float* c, int rows) {
  constexpr int kE = kHeadVectors * kLanes;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    Floats acc[4][kTileVectors] = {};
    for (int e = 0; e < kE; ++e) {
      Floats b[kTileVectors];
#pragma GCC unroll 4
      for (int v = 0; v < kTileVectors; ++v) b[v] = loadFloats(bt + e * ldb + v * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const float s = a[(r0 + i) * kE + e];
#pragma GCC unroll 4
        for (int v = 0; v < kTileVectors; ++v) acc[i][v] += s * b[v];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kTileVectors; ++v) storeFloats(c + (r0 + i) * kTile + v * kLanes, acc[i][v]);
  }
}

// C[r][0..E) += sum_{j < cols} W(r, j) B[j][0..E), W(r, j) = w[r * wRow + j * wCol], rows a multiple
// of the row block: C is [rows][E], B is [cols][E].
template <int kHeadVectors>
REALS_AVX512 inline void accumulateTile(float* c, int rows, const float* w, int64_t wRow, int64_t wCol, const float* b, int cols) {
  constexpr int kE = kHeadVectors * kLanes;
  constexpr int kRows = kHeadVectors <= 4 ? 4 : 2;
  for (int r0 = 0; r0 < rows; r0 += kRows) {
    Floats acc[kRows][kHeadVectors];
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) acc[i][v] = loadFloats(c + (r0 + i) * kE + v * kLanes);
    for (int j = 0; j < cols; ++j) {
      Floats bv[kHeadVectors];
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) bv[v] = loadFloats(b + j * kE + v * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < kRows; ++i) {
        const float s = w[(r0 + i) * wRow + j * wCol];
#pragma GCC unroll 8
        for (int v = 0; v < kHeadVectors; ++v) acc[i][v] += s * bv[v];
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) storeFloats(c + (r0 + i) * kE + v * kLanes, acc[i][v]);
  }
}

// One (batch, head) slice of a [B, H, N, E] tensor with a unit last stride.
template <typename T>
struct Slice {
  const T* data;
  int64_t rowStride;
  // Rows [begin, begin + count) as float32 into out ([kRows][E], times factor), zeros past `rows`.
  template <int kHeadVectors>
  REALS_AVX512 void read(int64_t begin, int count, int64_t rows, float factor, float* out) const {
    constexpr int kE = kHeadVectors * kLanes;
    for (int r = 0; r < count; ++r) {
      for (int v = 0; v < kHeadVectors; ++v) {
        storeFloats(out + r * kE + v * kLanes, begin + r < rows ? loadFloats(data + (begin + r) * rowStride + v * kLanes) * factor : Floats{});
      }
    }
  }
  // The same rows transposed: out[e][r] ([E][ldOut]).
  template <int kHeadVectors>
  REALS_AVX512 void readTransposed(int64_t begin, int count, int64_t rows, float* out, int64_t ldOut) const {
    constexpr int kE = kHeadVectors * kLanes;
    for (int r = 0; r < count; ++r) {
      float row[kE];
      for (int v = 0; v < kHeadVectors; ++v) {
        storeFloats(row + v * kLanes, begin + r < rows ? loadFloats(data + (begin + r) * rowStride + v * kLanes) : Floats{});
      }
      for (int e = 0; e < kE; ++e) out[e * ldOut + r] = row[e];
    }
  }
};

template <typename T>
struct Heads {
  const T* data;
  int64_t batchStride, headStride, rowStride, heads, rows;
  explicit Heads(const at::Tensor& t)
      : data(t.data_ptr<T>()), batchStride(t.stride(0)), headStride(t.stride(1)), rowStride(t.stride(2)), heads(t.size(1)), rows(t.size(2)) {}
  Slice<T> slice(int64_t bh) const { return {data + (bh / heads) * batchStride + (bh % heads) * headStride, rowStride}; }
};

template <typename T>
struct MutableHeads {
  T* data;
  int64_t batchStride, headStride, rowStride, heads;
  explicit MutableHeads(at::Tensor& t) : data(t.data_ptr<T>()), batchStride(t.stride(0)), headStride(t.stride(1)), rowStride(t.stride(2)), heads(t.size(1)) {}
  // float32 rows [begin, begin + count) of src ([count][E], times factor) into slice bh.
  template <int kHeadVectors>
  REALS_AVX512 void write(int64_t bh, int64_t begin, int count, const float* src, const float* rowFactors, float factor) const {
    constexpr int kE = kHeadVectors * kLanes;
    T* base = data + (bh / heads) * batchStride + (bh % heads) * headStride;
    for (int r = 0; r < count; ++r) {
      const float f = (rowFactors == nullptr ? 1.0f : rowFactors[r]) * factor;
      for (int v = 0; v < kHeadVectors; ++v) storeFloats(base + (begin + r) * rowStride + v * kLanes, loadFloats(src + r * kE + v * kLanes) * f);
    }
  }
};

int64_t tilesOf(int64_t n) { return (n + kTile - 1) / kTile; }

// The values x of a tile's columns [c, c + 16), `fill` from column `valid` on (the padding past
// the last key).
inline __attribute__((always_inline)) Floats keysOnly(Floats x, int c, int valid, float fill) {
  if (c + kLanes <= valid) return x;
  const Ints lanes = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return lanes + c < valid ? x : Floats{} + fill;
}

// One key tile of the online softmax for the first `count` rows of scores ([kTile][kTile], times
// scale): the running max and sum per row, the probabilities exp(s - max) in place (zero past
// `valid` keys), and the rows of acc ([kTile][kE]) rescaled where the max grew.
template <int kE>
REALS_AVX512 inline void onlineSoftmax(float* scores, int count, int valid, float scale, float* rowMax, float* rowSum, float* acc) {
  for (int r = 0; r < count; ++r) {
    float* row = scores + r * kTile;
    Floats maxes = Floats{} + kNegInf;
    for (int c = 0; c < kTile; c += kLanes) {
      const Floats s = loadFloats(row + c) * scale;
      storeFloats(row + c, s);
      const Floats masked = keysOnly(s, c, valid, kNegInf);
      maxes = maxes > masked ? maxes : masked;
    }
    float tileMax = kNegInf;
    for (int lane = 0; lane < kLanes; ++lane) tileMax = std::max(tileMax, maxes[lane]);
    const float newMax = std::max(rowMax[r], tileMax);
    const float rescale = std::exp(rowMax[r] - newMax);
    Floats sum{};
    for (int c = 0; c < kTile; c += kLanes) {
      const Floats p = keysOnly(expOf(loadFloats(row + c) - newMax), c, valid, 0.0f);
      storeFloats(row + c, p);
      sum += p;
    }
    rowSum[r] = rowSum[r] * rescale + sumLanes(sum);
    rowMax[r] = newMax;
    if (rescale != 1.0f) {
      for (int e = 0; e < kE; e += kLanes) storeFloats(acc + r * kE + e, loadFloats(acc + r * kE + e) * rescale);
    }
  }
}

// Forward of slice bh, tile of queries by tile: the output rows and, when lse is given, the
// log-sum-exp of each query's scaled scores. The keys (transposed) and values are read once.
template <int kHeadVectors, typename T>
REALS_AVX512 void forwardSlice(const Heads<T>& q, const Heads<T>& k, const Heads<T>& v, MutableHeads<T>& out, float* lse,
                               int64_t bh, float scale) {
  constexpr int kE = kHeadVectors * kLanes;
  const int64_t keyRows = tilesOf(k.rows) * kTile;
  const int64_t ldT = keyRows + kLanes;  // see backwardSlice
  std::vector<float> keysT(kE * ldT), values(keyRows * kE);
  const Slice<T> keys = k.slice(bh), vals = v.slice(bh);
  for (int64_t begin = 0; begin < keyRows; begin += kTile) {
    keys.template readTransposed<kHeadVectors>(begin, kTile, k.rows, keysT.data() + begin, ldT);
    vals.template read<kHeadVectors>(begin, kTile, k.rows, 1.0f, values.data() + begin * kE);
  }
  alignas(64) float qs[kTile * kE], scores[kTile * kTile], acc[kTile * kE];
  float rowMax[kTile], rowSum[kTile], inverse[kTile];
  for (int64_t begin = 0; begin < q.rows; begin += kTile) {
    const int count = static_cast<int>(std::min<int64_t>(kTile, q.rows - begin));
    std::fill(rowMax, rowMax + kTile, kNegInf);
    std::fill(rowSum, rowSum + kTile, 0.0f);
    std::fill(acc, acc + kTile * kE, 0.0f);
    q.slice(bh).template read<kHeadVectors>(begin, kTile, q.rows, scale, qs);
    for (int64_t keyBegin = 0; keyBegin < keyRows; keyBegin += kTile) {
      const int valid = static_cast<int>(std::min<int64_t>(kTile, k.rows - keyBegin));
      productTile<kHeadVectors>(qs, keysT.data() + keyBegin, ldT, scores, kTile);
      onlineSoftmax<kE>(scores, count, valid, 1.0f, rowMax, rowSum, acc);
      accumulateTile<kHeadVectors>(acc, kTile, scores, kTile, 1, values.data() + keyBegin * kE, kTile);
    }
    for (int r = 0; r < count; ++r) {
      inverse[r] = 1.0f / rowSum[r];
      if (lse != nullptr) lse[bh * q.rows + begin + r] = rowMax[r] + std::log(rowSum[r]);
    }
    out.template write<kHeadVectors>(bh, begin, count, acc, inverse, 1.0f);
  }
}

#define REALS_AVX512_BF16 __attribute__((target("avx512f,avx512bf16")))

// AVX512-BF16 takes bfloat16 in pairs, as 32-bit words, and adds both products of a pair into one
// float32 lane: exact products, float32 sums, twice the multiply-adds of a float32 FMA per instruction.
// C[r][0..kTile) = sum over pairs p of A[r][p] . BT[p][c]: A is [rows][E / 2] words, BT [E / 2][ldb].
template <int kHeadVectors>
REALS_AVX512_BF16 inline void productTileBf16(const uint32_t* a, const uint32_t* bt, int64_t ldb, float* c, int rows) {
  constexpr int kPairs = kHeadVectors * kLanes / 2;
  for (int r0 = 0; r0 < rows; r0 += 4) {
    __m512 acc[4][kTileVectors];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kTileVectors; ++v) acc[i][v] = _mm512_setzero_ps();
    for (int p = 0; p < kPairs; ++p) {
      __m512bh b[kTileVectors];
#pragma GCC unroll 4
      for (int v = 0; v < kTileVectors; ++v) b[v] = (__m512bh)_mm512_loadu_si512(bt + p * ldb + v * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512bh s = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[(r0 + i) * kPairs + p]));
#pragma GCC unroll 4
        for (int v = 0; v < kTileVectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], s, b[v]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < kTileVectors; ++v) _mm512_storeu_ps(c + (r0 + i) * kTile + v * kLanes, acc[i][v]);
  }
}

// C[r][0..E) += sum over the tile's row pairs j of W(r, j) . B[j][0..E): W(r, j) = w[r * wRow + j * wCol]
// words, B [kTile / 2][E] words.
template <int kHeadVectors>
REALS_AVX512_BF16 inline void accumulateTileBf16(float* c, int rows, const uint32_t* w, int64_t wRow, int64_t wCol, const uint32_t* b) {
  constexpr int kE = kHeadVectors * kLanes;
  constexpr int kRows = kHeadVectors <= 4 ? 4 : 2;
  constexpr int kPairs = kTile / 2;
  for (int r0 = 0; r0 < rows; r0 += kRows) {
    __m512 acc[kRows][kHeadVectors];
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) acc[i][v] = _mm512_loadu_ps(c + (r0 + i) * kE + v * kLanes);
    for (int j = 0; j < kPairs; ++j) {
      __m512bh bv[kHeadVectors];
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + j * kE + v * kLanes);
#pragma GCC unroll 4
      for (int i = 0; i < kRows; ++i) {
        const __m512bh s = (__m512bh)_mm512_set1_epi32(static_cast<int>(w[(r0 + i) * wRow + j * wCol]));
#pragma GCC unroll 8
        for (int v = 0; v < kHeadVectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], s, bv[v]);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i)
#pragma GCC unroll 8
      for (int v = 0; v < kHeadVectors; ++v) _mm512_storeu_ps(c + (r0 + i) * kE + v * kLanes, acc[i][v]);
  }
}

// A bfloat16 slice's first `rows` rows as the words of AVX512-BF16, into zeroed memory: transposed,
// out[p][c] = (x[c][2p], x[c][2p + 1]) ([E / 2][ld], the right operand of productTileBf16), or
// interleaved, out[j][e] = (x[2j][e], x[2j + 1][e]) ([rows / 2][E], that of accumulateTileBf16).
template <int kHeadVectors>
void readPairsTransposed(const Slice<at::BFloat16>& x, int64_t rows, uint32_t* out, int64_t ld) {
  constexpr int kPairs = kHeadVectors * kLanes / 2;
  for (int64_t c = 0; c < rows; ++c) {
    uint32_t row[kPairs];
    std::memcpy(row, x.data + c * x.rowStride, sizeof row);
    for (int p = 0; p < kPairs; ++p) out[p * ld + c] = row[p];
  }
}
template <int kHeadVectors>
REALS_AVX512_BF16 void readPairsInterleaved(const Slice<at::BFloat16>& x, int64_t rows, uint32_t* out) {
  constexpr int kE = kHeadVectors * kLanes;
  for (int64_t j = 0; j < rows; j += 2) {
    for (int vec = 0; vec < kHeadVectors; ++vec) {
      Bf16Bits even, odd{};
      std::memcpy(&even, x.data + j * x.rowStride + vec * kLanes, sizeof even);
      if (j + 1 < rows) std::memcpy(&odd, x.data + (j + 1) * x.rowStride + vec * kLanes, sizeof odd);
      const Bits words = __builtin_convertvector(even, Bits) | (__builtin_convertvector(odd, Bits) << 16);
      std::memcpy(out + (j / 2) * kE + vec * kLanes, &words, sizeof words);
    }
  }
}

// The rows of x ([kTile][kTile] float32) rounded to bfloat16, as row words out[r][j] = (x[r][2j],
// x[r][2j + 1]) (W of accumulateTileBf16 with wRow kTile / 2, wCol 1) or, for the transposed
// product, as row-pair words out[j][c] = (x[2j][c], x[2j + 1][c]) (wRow 1, wCol kTile).
REALS_AVX512_BF16 inline void roundRows(const float* x, uint32_t* out) {
  at::BFloat16* halves = reinterpret_cast<at::BFloat16*>(out);
  for (int i = 0; i < kTile * kTile; i += kLanes) storeFloats(halves + i, loadFloats(x + i));
}
REALS_AVX512_BF16 inline void roundRowPairs(const float* x, uint32_t* out) {
  for (int j = 0; j < kTile / 2; ++j) {
    for (int c = 0; c < kTile; c += kLanes) {
      const Bits words = bfloat16Bits(loadFloats(x + 2 * j * kTile + c)) | (bfloat16Bits(loadFloats(x + (2 * j + 1) * kTile + c)) << 16);
      std::memcpy(out + j * kTile + c, &words, sizeof words);
    }
  }
}

// forwardSlice for bfloat16 on CPUs with AVX512-BF16: the scores from the bfloat16 inputs, the
// weighted sum from the probabilities rounded to bfloat16 (as PyTorch's bfloat16 path rounds its
// softmax), the softmax in float32 between them.
template <int kHeadVectors>
REALS_AVX512_BF16 void forwardSliceBf16(const Heads<at::BFloat16>& q, const Heads<at::BFloat16>& k, const Heads<at::BFloat16>& v,
                                        MutableHeads<at::BFloat16>& out, float* lse, int64_t bh, float scale) {
  constexpr int kE = kHeadVectors * kLanes, kPairs = kE / 2;
  const int64_t keyRows = tilesOf(k.rows) * kTile;
  const int64_t ldT = keyRows + kLanes;  // see backwardSlice
  // keyPairs[p][c] is the word (k[c][2p], k[c][2p + 1]), valuePairs[j][e] the word (v[2j][e], v[2j + 1][e]).
  std::vector<uint32_t> keyPairs(kPairs * ldT, 0u), valuePairs(keyRows / 2 * kE, 0u);
  const Slice<at::BFloat16> queries = q.slice(bh);
  readPairsTransposed<kHeadVectors>(k.slice(bh), k.rows, keyPairs.data(), ldT);
  readPairsInterleaved<kHeadVectors>(v.slice(bh), k.rows, valuePairs.data());
  alignas(64) uint32_t queryPairs[kTile * kPairs], probPairs[kTile * kTile / 2];
  alignas(64) float scores[kTile * kTile], acc[kTile * kE];
  float rowMax[kTile], rowSum[kTile], inverse[kTile];
  for (int64_t begin = 0; begin < q.rows; begin += kTile) {
    const int count = static_cast<int>(std::min<int64_t>(kTile, q.rows - begin));
    std::fill(rowMax, rowMax + kTile, kNegInf);
    std::fill(rowSum, rowSum + kTile, 0.0f);
    std::fill(acc, acc + kTile * kE, 0.0f);
    std::fill(queryPairs, queryPairs + kTile * kPairs, 0u);
    for (int r = 0; r < count; ++r) std::memcpy(queryPairs + r * kPairs, queries.data + (begin + r) * queries.rowStride, kE * sizeof(at::BFloat16));
    for (int64_t keyBegin = 0; keyBegin < keyRows; keyBegin += kTile) {
      const int valid = static_cast<int>(std::min<int64_t>(kTile, k.rows - keyBegin));
      productTileBf16<kHeadVectors>(queryPairs, keyPairs.data() + keyBegin, ldT, scores, kTile);
      onlineSoftmax<kE>(scores, count, valid, scale, rowMax, rowSum, acc);
      // Rows past `count` hold the zero scores of the zero query padding: probabilities of 0 are harmless.
      at::BFloat16* probs = reinterpret_cast<at::BFloat16*>(probPairs);
      for (int i = 0; i < kTile * kTile; i += kLanes) storeFloats(probs + i, count == kTile || i < count * kTile ? loadFloats(scores + i) : Floats{});
      accumulateTileBf16<kHeadVectors>(acc, kTile, probPairs, kTile / 2, 1, valuePairs.data() + keyBegin / 2 * kE);
    }
    for (int r = 0; r < count; ++r) {
      inverse[r] = 1.0f / rowSum[r];
      if (lse != nullptr) lse[bh * q.rows + begin + r] = rowMax[r] + std::log(rowSum[r]);
    }
    out.template write<kHeadVectors>(bh, begin, count, acc, inverse, 1.0f);
  }
}

// backwardSlice for bfloat16 on CPUs with AVX512-BF16: the five products on dot products of the
// bfloat16 inputs and of P and dS rounded to bfloat16 (as the forward rounds P), P recomputed and
// dS formed in float32 between them; the gradients summed in float32 and rounded once.
template <int kHeadVectors>
REALS_AVX512_BF16 void backwardSliceBf16(const Heads<at::BFloat16>& q, const Heads<at::BFloat16>& k, const Heads<at::BFloat16>& v,
                                         const Heads<at::BFloat16>& o, const Heads<at::BFloat16>& gradOut, const float* lse,
                                         MutableHeads<at::BFloat16>& gradQ, MutableHeads<at::BFloat16>& gradK,
                                         MutableHeads<at::BFloat16>& gradV, int64_t bh, float scale) {
  constexpr int kE = kHeadVectors * kLanes, kPairs = kE / 2;
  const int64_t queryRows = tilesOf(q.rows) * kTile, keyRows = tilesOf(k.rows) * kTile;
  const int64_t ldT = keyRows + kLanes;  // see backwardSlice
  // q and dO as rows of words (a bfloat16 row is its own pairs: the left operand of productTileBf16)
  // and interleaved; k and v transposed; k interleaved. Zero past the rows.
  std::vector<uint32_t> queryWords(queryRows * kPairs, 0u), queryPairs(queryRows / 2 * kE, 0u), gradWords(queryRows * kPairs, 0u),
      gradPairs(queryRows / 2 * kE, 0u), keyPairsT(kPairs * ldT, 0u), valuePairsT(kPairs * ldT, 0u), keyPairs(keyRows / 2 * kE, 0u);
  std::vector<float> dq(queryRows * kE, 0.0f), dk(keyRows * kE, 0.0f), dv(keyRows * kE, 0.0f), delta(queryRows, 0.0f), rowLse(queryRows, 0.0f);
  const Slice<at::BFloat16> qSlice = q.slice(bh), kSlice = k.slice(bh), oSlice = o.slice(bh), gSlice = gradOut.slice(bh);
  for (int64_t r = 0; r < q.rows; ++r) {
    std::memcpy(queryWords.data() + r * kPairs, qSlice.data + r * qSlice.rowStride, kE * sizeof(at::BFloat16));
    std::memcpy(gradWords.data() + r * kPairs, gSlice.data + r * gSlice.rowStride, kE * sizeof(at::BFloat16));
    Floats d{};
    for (int e = 0; e < kE; e += kLanes) d += loadFloats(oSlice.data + r * oSlice.rowStride + e) * loadFloats(gSlice.data + r * gSlice.rowStride + e);
    delta[r] = sumLanes(d);
    rowLse[r] = lse[bh * q.rows + r];
  }
  readPairsInterleaved<kHeadVectors>(qSlice, q.rows, queryPairs.data());
  readPairsInterleaved<kHeadVectors>(gSlice, q.rows, gradPairs.data());
  readPairsTransposed<kHeadVectors>(kSlice, k.rows, keyPairsT.data(), ldT);
  readPairsTransposed<kHeadVectors>(v.slice(bh), k.rows, valuePairsT.data(), ldT);
  readPairsInterleaved<kHeadVectors>(kSlice, k.rows, keyPairs.data());
  alignas(64) float probs[kTile * kTile], gradScores[kTile * kTile];
  alignas(64) uint32_t probPairs[kTile * kTile / 2], gradScorePairs[kTile * kTile / 2], gradScoreWords[kTile * kTile / 2];
  for (int64_t keyBegin = 0; keyBegin < keyRows; keyBegin += kTile) {
    const int valid = static_cast<int>(std::min<int64_t>(kTile, k.rows - keyBegin));
    for (int64_t queryBegin = 0; queryBegin < queryRows; queryBegin += kTile) {
      // As in backwardSlice, padded query rows have zero gradient rows and padded keys P = 0.
      productTileBf16<kHeadVectors>(queryWords.data() + queryBegin * kPairs, keyPairsT.data() + keyBegin, ldT, probs, kTile);
      for (int r = 0; r < kTile; ++r) {
        float* row = probs + r * kTile;
        const float shift = rowLse[queryBegin + r];
        for (int c = 0; c < kTile; c += kLanes) storeFloats(row + c, keysOnly(expOf(loadFloats(row + c) * scale - shift), c, valid, 0.0f));
      }
      roundRowPairs(probs, probPairs);
      accumulateTileBf16<kHeadVectors>(dv.data() + keyBegin * kE, kTile, probPairs, 1, kTile, gradPairs.data() + queryBegin / 2 * kE);
      productTileBf16<kHeadVectors>(gradWords.data() + queryBegin * kPairs, valuePairsT.data() + keyBegin, ldT, gradScores, kTile);
      for (int r = 0; r < kTile; ++r) {
        const float d = delta[queryBegin + r];
        for (int c = 0; c < kTile; c += kLanes) {
          storeFloats(gradScores + r * kTile + c, loadFloats(probs + r * kTile + c) * (loadFloats(gradScores + r * kTile + c) - d));
        }
      }
      roundRows(gradScores, gradScoreWords);
      roundRowPairs(gradScores, gradScorePairs);
      accumulateTileBf16<kHeadVectors>(dq.data() + queryBegin * kE, kTile, gradScoreWords, kTile / 2, 1, keyPairs.data() + keyBegin / 2 * kE);
      accumulateTileBf16<kHeadVectors>(dk.data() + keyBegin * kE, kTile, gradScorePairs, 1, kTile, queryPairs.data() + queryBegin / 2 * kE);
    }
  }
  // The scores were scale q k^T of the unscaled inputs, so dq and dk both take the scale.
  gradQ.template write<kHeadVectors>(bh, 0, static_cast<int>(q.rows), dq.data(), nullptr, scale);
  gradK.template write<kHeadVectors>(bh, 0, static_cast<int>(k.rows), dk.data(), nullptr, scale);
  gradV.template write<kHeadVectors>(bh, 0, static_cast<int>(k.rows), dv.data(), nullptr, 1.0f);
}

#undef REALS_AVX512_BF16

// Backward of slice bh: dq, dk, dv from the inputs, the output, its gradient and the log-sum-exp.
template <int kHeadVectors, typename T>
REALS_AVX512 void backwardSlice(const Heads<T>& q, const Heads<T>& k, const Heads<T>& v, const Heads<T>& o, const Heads<T>& gradOut,
                                const float* lse, MutableHeads<T>& gradQ, MutableHeads<T>& gradK, MutableHeads<T>& gradV,
                                int64_t bh, float scale) {
  constexpr int kE = kHeadVectors * kLanes;
  const int64_t queryRows = tilesOf(q.rows) * kTile, keyRows = tilesOf(k.rows) * kTile;
  // The transposed keys and values' rows are keyRows + 16 long: at a multiple of 1 KiB the column
  // writes of the transpose alias in the L1 cache.
  const int64_t ldT = keyRows + kLanes;
  std::vector<float> qs(queryRows * kE), dO(queryRows * kE), dq(queryRows * kE, 0.0f), delta(queryRows, 0.0f), rowLse(queryRows, 0.0f);
  std::vector<float> keysF(keyRows * kE), keysT(kE * ldT), valuesT(kE * ldT), dk(keyRows * kE, 0.0f), dv(keyRows * kE, 0.0f);
  alignas(64) float probs[kTile * kTile], gradScores[kTile * kTile], outRows[kTile * kE];
  const Slice<T> qSlice = q.slice(bh), kSlice = k.slice(bh), vSlice = v.slice(bh), oSlice = o.slice(bh), gSlice = gradOut.slice(bh);
  for (int64_t begin = 0; begin < queryRows; begin += kTile) {
    qSlice.template read<kHeadVectors>(begin, kTile, q.rows, scale, qs.data() + begin * kE);
    gSlice.template read<kHeadVectors>(begin, kTile, q.rows, 1.0f, dO.data() + begin * kE);
    oSlice.template read<kHeadVectors>(begin, kTile, q.rows, 1.0f, outRows);
    for (int r = 0; r < kTile && begin + r < q.rows; ++r) {
      Floats d{};
      for (int e = 0; e < kE; e += kLanes) d += loadFloats(outRows + r * kE + e) * loadFloats(dO.data() + (begin + r) * kE + e);
      delta[begin + r] = sumLanes(d);
      rowLse[begin + r] = lse[bh * q.rows + begin + r];
    }
  }
  for (int64_t begin = 0; begin < keyRows; begin += kTile) {
    kSlice.template read<kHeadVectors>(begin, kTile, k.rows, 1.0f, keysF.data() + begin * kE);
    kSlice.template readTransposed<kHeadVectors>(begin, kTile, k.rows, keysT.data() + begin, ldT);
    vSlice.template readTransposed<kHeadVectors>(begin, kTile, k.rows, valuesT.data() + begin, ldT);
  }
  for (int64_t keyBegin = 0; keyBegin < keyRows; keyBegin += kTile) {
    const int valid = static_cast<int>(std::min<int64_t>(kTile, k.rows - keyBegin));
    for (int64_t queryBegin = 0; queryBegin < queryRows; queryBegin += kTile) {
      // Padded query rows have zero gradient rows, so they add nothing; padded keys get P = 0.
      productTile<kHeadVectors>(qs.data() + queryBegin * kE, keysT.data() + keyBegin, ldT, probs, kTile);
      for (int r = 0; r < kTile; ++r) {
        float* row = probs + r * kTile;
        const float shift = rowLse[queryBegin + r];
        for (int c = 0; c < kTile; c += kLanes) storeFloats(row + c, keysOnly(expOf(loadFloats(row + c) - shift), c, valid, 0.0f));
      }
      accumulateTile<kHeadVectors>(dv.data() + keyBegin * kE, kTile, probs, 1, kTile, dO.data() + queryBegin * kE, kTile);
      productTile<kHeadVectors>(dO.data() + queryBegin * kE, valuesT.data() + keyBegin, ldT, gradScores, kTile);
      for (int r = 0; r < kTile; ++r) {
        const float d = delta[queryBegin + r];
        for (int c = 0; c < kTile; c += kLanes) {
          storeFloats(gradScores + r * kTile + c, loadFloats(probs + r * kTile + c) * (loadFloats(gradScores + r * kTile + c) - d));
        }
      }
      accumulateTile<kHeadVectors>(dq.data() + queryBegin * kE, kTile, gradScores, kTile, 1, keysF.data() + keyBegin * kE, kTile);
      accumulateTile<kHeadVectors>(dk.data() + keyBegin * kE, kTile, gradScores, 1, kTile, qs.data() + queryBegin * kE, kTile);
    }
  }
  gradQ.template write<kHeadVectors>(bh, 0, static_cast<int>(q.rows), dq.data(), nullptr, scale);
  gradK.template write<kHeadVectors>(bh, 0, static_cast<int>(k.rows), dk.data(), nullptr, 1.0f);
  gradV.template write<kHeadVectors>(bh, 0, static_cast<int>(k.rows), dv.data(), nullptr, 1.0f);
}

#undef REALS_AVX512

// Calls body(std::integral_constant<int, kHeadVectors>, T{}) for E = 16 kHeadVectors and the
// element type T of the dtype (float32 or bfloat16).
template <typename Body>
void dispatch(at::ScalarType dtype, int64_t headDim, Body&& body) {
  auto withType = [&](auto vectors) {
    if (dtype == at::kBFloat16) body(vectors, at::BFloat16{});
    else body(vectors, float{});
  };
  switch (headDim / kLanes) {
    case 1: withType(std::integral_constant<int, 1>{}); break;
    case 2: withType(std::integral_constant<int, 2>{}); break;
    case 3: withType(std::integral_constant<int, 3>{}); break;
    case 4: withType(std::integral_constant<int, 4>{}); break;
    case 5: withType(std::integral_constant<int, 5>{}); break;
    case 6: withType(std::integral_constant<int, 6>{}); break;
    case 7: withType(std::integral_constant<int, 7>{}); break;
    case 8: withType(std::integral_constant<int, 8>{}); break;
    default: TORCH_CHECK(false, "attention: head size ", headDim, " is not a multiple of 16 up to 128");
  }
}

bool cpuHasBf16Dots() {
  static const bool has = __builtin_cpu_supports("avx512bf16");
  return has;
}

// Whether oneDNN runs bfloat16 matmuls on AMX here: the CPU has AMX-BF16 (CPUID leaf 7, EDX bit 22)
// and DNNL_MAX_CPU_ISA, if set, does not stop below it. There libtorch's math path (AMX matmuls
// and its softmax) is faster than this kernel's AVX512-BF16 dot products, so bfloat16 stays on it
// (bench/README.md, "A fused attention kernel").
bool amxMatmuls() {
  static const bool amx = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 22))) return false;
    const char* isa = std::getenv("DNNL_MAX_CPU_ISA");
    if (isa == nullptr) return true;
    std::string upper(isa);
    for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return upper == "ALL" || upper.find("AMX") != std::string::npos;
  }();
  return amx;
}

// q, k, v as [B, H, N, E] with a unit last stride (a view where possible), or undefined.
at::Tensor asHeads(const at::Tensor& t) {
  at::Tensor four = t.dim() == 3 ? t.unsqueeze(0) : t.dim() == 4 ? t : t.reshape({-1, t.size(-3), t.size(-2), t.size(-1)});
  return four.stride(3) == 1 ? four : four.contiguous();
}

// The output (and log-sum-exp [B H, L] when wanted) of 4-D q, k, v of one dtype.
std::pair<at::Tensor, at::Tensor> fusedForward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, bool wantLse) {
  const int64_t batch = q.size(0), heads = q.size(1), rows = q.size(2), headDim = q.size(3);
  // [B, L, H, E] in memory, so that the heads' usual next step (transpose(1, 2), reshape) is a view.
  at::Tensor out = at::empty({batch, rows, heads, headDim}, q.options()).transpose(1, 2);
  at::Tensor lse = wantLse ? at::empty({batch * heads, rows}, q.options().dtype(at::kFloat)) : at::Tensor();
  float* lsePtr = wantLse ? lse.data_ptr<float>() : nullptr;
  dispatch(q.scalar_type(), headDim, [&](auto vectors, auto element) {
    using T = decltype(element);
    const Heads<T> qh(q), kh(k), vh(v);
    MutableHeads<T> oh(out);
    at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        if constexpr (std::is_same_v<T, at::BFloat16>) {
          if (cpuHasBf16Dots()) {
            forwardSliceBf16<decltype(vectors)::value>(qh, kh, vh, oh, lsePtr, bh, static_cast<float>(scale));
            continue;
          }
        }
        forwardSlice<decltype(vectors)::value>(qh, kh, vh, oh, lsePtr, bh, static_cast<float>(scale));
      }
    });
  });
  return {out, lse};
}

// The gradients by differentiable libtorch ops (for create_graph), from the same formulas.
torch::autograd::tensor_list differentiableBackward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& gradOut, double scale) {
  const at::Tensor probs = at::softmax(at::matmul(q * scale, k.transpose(-2, -1)), -1);
  const at::Tensor gradProbs = at::matmul(gradOut, v.transpose(-2, -1));
  const at::Tensor gradScores = probs * (gradProbs - (gradProbs * probs).sum(-1, true));
  return {at::matmul(gradScores, k) * scale, at::matmul(gradScores.transpose(-2, -1), q) * scale, at::matmul(probs.transpose(-2, -1), gradOut)};
}

struct FusedAttention : public torch::autograd::Function<FusedAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
    auto [out, lse] = fusedForward(q, k, v, scale, true);
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["scale"] = scale;
    return out;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    const double scale = ctx->saved_data["scale"].toDouble();
    const at::Tensor gradOut = grads[0].to(q.scalar_type());
    if (at::GradMode::is_enabled()) {
      auto g = differentiableBackward(q, k, v, gradOut, scale);
      return {g[0], g[1], g[2], at::Tensor()};
    }
    const at::Tensor g = gradOut.stride(3) == 1 ? gradOut : gradOut.contiguous();
    at::Tensor gradQ = at::empty_like(q, at::MemoryFormat::Contiguous), gradK = at::empty_like(k, at::MemoryFormat::Contiguous),
               gradV = at::empty_like(v, at::MemoryFormat::Contiguous);
    const int64_t slices = q.size(0) * q.size(1);
    const float* lsePtr = lse.data_ptr<float>();
    dispatch(q.scalar_type(), q.size(3), [&](auto vectors, auto element) {
      using T = decltype(element);
      const Heads<T> qh(q), kh(k), vh(v), oh(out), gh(g);
      MutableHeads<T> dqh(gradQ), dkh(gradK), dvh(gradV);
      at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
        for (int64_t bh = begin; bh < end; ++bh) {
          if constexpr (std::is_same_v<T, at::BFloat16>) {
            if (cpuHasBf16Dots()) {
              backwardSliceBf16<decltype(vectors)::value>(qh, kh, vh, oh, gh, lsePtr, dqh, dkh, dvh, bh, static_cast<float>(scale));
              continue;
            }
          }
          backwardSlice<decltype(vectors)::value>(qh, kh, vh, oh, gh, lsePtr, dqh, dkh, dvh, bh, static_cast<float>(scale));
        }
      });
    });
    return {gradQ, gradK, gradV, at::Tensor()};
  }
};

// Whether the kernel takes q, k, v (after autocast's cast): CPU, AVX-512, one dtype of float32 or
// bfloat16, at least 3-D, E = value's E a multiple of 16 up to 128, matching batch dims.
constexpr int64_t kMinFusedTokens = 64;

bool fusable(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (!cpuHasAvx512()) return false;
  for (const at::Tensor* t : {&q, &k, &v}) {
    if (!t->device().is_cpu() || t->scalar_type() != q.scalar_type() || t->dim() < 3 || t->dim() != q.dim()) return false;
  }
  if (q.scalar_type() != at::kFloat && q.scalar_type() != at::kBFloat16) return false;
  const int64_t headDim = q.size(-1);
  if (headDim % kLanes != 0 || headDim > kMaxHeadVectors * kLanes || k.size(-1) != headDim || v.size(-1) != headDim) return false;
  if (k.size(-2) != v.size(-2) || k.size(-2) == 0 || q.size(-2) == 0) return false;
  return q.sizes().slice(0, q.dim() - 2) == k.sizes().slice(0, k.dim() - 2) && q.sizes().slice(0, q.dim() - 2) == v.sizes().slice(0, v.dim() - 2);
}

// attention(q, k, v, scale, forceKernel): the fused output, or null where the kernel does not
// take the inputs or, unless forceKernel (the tests), is not the faster path (the header); the
// caller then runs the math path. Under CPU autocast float32 inputs are cast to its dtype, as the
// math path's matmuls would be.
napi_value AttentionCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "attention", [&]() -> napi_value {
    at::Tensor q = unwrapTensor(env, args[0], "attention(query)");
    at::Tensor k = unwrapTensor(env, args[1], "attention(key)");
    at::Tensor v = unwrapTensor(env, args[2], "attention(value)");
    const double scale = getDouble(env, args[3], "attention(scale)");
    if (at::autocast::is_cpu_enabled()) {
      const at::ScalarType lower = at::autocast::get_autocast_cpu_dtype();
      for (at::Tensor* t : {&q, &k, &v}) {
        if (t->device().is_cpu() && t->scalar_type() == at::kFloat) *t = t->to(lower);
      }
    }
    const bool forceKernel = args[4] != nullptr && typeOf(env, args[4]) == napi_boolean && getBool(env, args[4], "attention(forceKernel)");
    if (!fusable(q, k, v)) return makeNull(env);
    const bool needsGrad = gradWanted({&q, &k, &v});
    const bool faster = q.size(-2) >= kMinFusedTokens && k.size(-2) >= kMinFusedTokens && (q.scalar_type() == at::kFloat || !amxMatmuls());
    if (!faster && !forceKernel) return makeNull(env);
    const std::vector<int64_t> outShape = q.sizes().vec();
    const at::Tensor q4 = asHeads(q), k4 = asHeads(k), v4 = asHeads(v);
    const at::Tensor out = needsGrad ? FusedAttention::apply(q4, k4, v4, scale) : fusedForward(q4, k4, v4, scale, false).first;
    return wrapTensor(env, q.dim() == 4 ? out : out.reshape(outShape));
  });
}

// fusedAttention(dtype): whether F.scaledDotProductAttention may run the kernel for 'float32' or
// 'bfloat16' here, given at least kMinFusedTokens.
napi_value FusedAttentionCall(napi_env env, napi_callback_info info) {
  Args args(env, info);
  return guarded(env, "fusedAttention", [&]() -> napi_value {
    const std::string dtype = getString(env, args[0], "fusedAttention(dtype)");
    if (dtype != "float32" && dtype != "bfloat16") throw JsError{"fusedAttention: dtype must be 'float32' or 'bfloat16', got '" + dtype + "'"};
    return makeBool(env, cpuHasAvx512() && (dtype == "float32" || !amxMatmuls()));
  });
}

}  // namespace

void initAttention(napi_env env, napi_value exports) {
  exportFunction(env, exports, "fusedAttention", FusedAttentionCall);
  exportFunction(env, exports, "attention", AttentionCall);
}

}  // namespace reals
