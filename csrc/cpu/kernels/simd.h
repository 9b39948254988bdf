// Fixed-width SIMD vectors through GCC/Clang vector extensions, as wide as the level being compiled
// (kernels/isa.h): 64 bytes for AVX-512, 32 for AVX2, 16 for the baseline (SSE2 on x86-64, NEON on
// aarch64; the compiler splits them where a target has no such registers).
#pragma once

#include "isa.h"

#include <cstdint>
#include <cstring>
#include <type_traits>

TORCHCORR_ISA_BEGIN

constexpr int kVectorBytes = TORCHCORR_VECTOR_BYTES;
constexpr int kVectorRegisters = TORCHCORR_VECTOR_REGISTERS;

// Accumulator registers a register-blocked kernel may use (the rest hold loaded operands).
constexpr int kAccumulators = kVectorRegisters * 3 / 4;

template <typename T>
struct Simd {
  typedef T Vec __attribute__((vector_size(kVectorBytes)));
  static constexpr int lanes = kVectorBytes / sizeof(T);

  static Vec load(const T* p) {  // unaligned
    Vec v;
    std::memcpy(&v, p, sizeof(Vec));
    return v;
  }
  static void store(T* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }
  static Vec zero() { return Vec{}; }
  // Lanes added in index order, so the result's bits never depend on anything but the values.
  static T sum(Vec v) {
    T total = 0;
    for (int i = 0; i < lanes; ++i) total += v[i];
    return total;
  }

  using Index = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef Index Mask __attribute__((vector_size(kVectorBytes)));

  // result[i] = v[index[i]].
  static Vec permute(Vec v, Mask index) {
#if defined(__GNUC__) && !defined(__clang__)
    return __builtin_shuffle(v, index);
#else
    Vec result;
    for (int i = 0; i < lanes; ++i) result[i] = v[index[i]];
    return result;
#endif
  }

  // rows[i][j] becomes rows[j][i]: log2(lanes) rounds, each interleaving row i with row i + lanes/2.
  static void transpose(Vec* rows) {
#if defined(__GNUC__) && !defined(__clang__)
    Mask low, high;
    for (int i = 0; i < lanes; ++i) {
      low[i] = i / 2 + (i % 2) * lanes;
      high[i] = low[i] + lanes / 2;
    }
    for (int round = 1; round < lanes; round *= 2) {
      Vec next[lanes];
      for (int i = 0; i < lanes / 2; ++i) {
        next[2 * i] = __builtin_shuffle(rows[i], rows[i + lanes / 2], low);
        next[2 * i + 1] = __builtin_shuffle(rows[i], rows[i + lanes / 2], high);
      }
      for (int i = 0; i < lanes; ++i) rows[i] = next[i];
    }
#else
    for (int i = 0; i < lanes; ++i)
      for (int j = 0; j < i; ++j) {
        const T value = rows[i][j];
        rows[i][j] = rows[j][i];
        rows[j][i] = value;
      }
#endif
  }
};

// The first address at or after p that is aligned to a whole vector.
template <typename T>
T* vector_aligned(T* p) {
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((address + kVectorBytes - 1) / kVectorBytes * kVectorBytes);
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols: whole L x L blocks through a
// register transpose, the edges one value at a time.
template <typename T>
void transpose(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* dst, int64_t dst_stride) {
  using S = Simd<T>;
  constexpr int64_t L = S::lanes;
  const int64_t full_rows = rows / L * L, full_cols = cols / L * L;
  typename S::Vec block[L];
  for (int64_t i0 = 0; i0 < full_rows; i0 += L)
    for (int64_t j0 = 0; j0 < full_cols; j0 += L) {
      for (int64_t i = 0; i < L; ++i) block[i] = S::load(src + (i0 + i) * src_stride + j0);
      S::transpose(block);
      for (int64_t j = 0; j < L; ++j) S::store(dst + (j0 + j) * dst_stride + i0, block[j]);
    }
  for (int64_t j = 0; j < cols; ++j) {  // the edges, a destination row at a time (stems: 3 columns, all edge)
    T* const to = dst + j * dst_stride;
    const T* const from = src + j;
    for (int64_t i = j < full_cols ? full_rows : 0; i < rows; ++i) to[i] = from[i * src_stride];
  }
}

TORCHCORR_ISA_END
