// Fixed-width SIMD vectors through GCC/Clang vector extensions, as wide as the compiler targets:
// 64 bytes with AVX-512, 32 with AVX/AVX2, 16 otherwise (SSE, NEON, or plain scalar code the
// compiler splits). setup.py builds with -march=native, so this is the machine's own width.
#pragma once

#include <cstdint>
#include <cstring>

namespace torchcorr::cpu {

#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kVectorRegisters = 32;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#else
constexpr int kVectorBytes = 16;
constexpr int kVectorRegisters = 16;
#endif

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

}  // namespace torchcorr::cpu
