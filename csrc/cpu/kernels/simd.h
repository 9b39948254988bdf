// Fixed-width SIMD vectors through GCC/Clang vector extensions, as wide as the level being compiled
// (kernels/isa.h): 64 bytes for AVX-512, 32 for AVX2, 16 for the baseline (SSE2 on x86-64, NEON on
// aarch64; the compiler splits them where a target has no such registers).
#pragma once

#include "isa.h"

#include <cstdint>
#include <cstring>

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
};

TORCHCORR_ISA_END
