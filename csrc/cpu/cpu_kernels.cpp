// Run-time choice of the CPU kernels' instruction-set level (cpu_kernels.h).
//
// The one table of levels, best first; the first whose features the CPU has is chosen, as oneDNN walks its
// implementation list:
//
//   level     compiled with (GCC target)                       vectors   registers
//   avx512    AVX-512 F/BW/DQ/VL, AVX2, FMA (x86-64-v4 class)  64 bytes  32
//   avx2      AVX2, FMA (x86-64-v3 class)                      32 bytes  16
//   baseline  the compiler's default: SSE2 on x86-64, NEON     16 bytes  16 (32 on aarch64)
//             on aarch64; the only level with other compilers
//
// TORCHCORR_CPU_ISA=<level> (any case) picks a lower level (to compare, or to work around a bug).
#include "cpu_kernels.h"

#include <c10/util/Exception.h>

#include <cctype>
#include <cstdlib>
#include <string>

namespace torchcorr::cpu {
namespace {

struct IsaLevel {
  const char* name;
  const CpuKernels* kernels;
  bool (*supported)();
};

#ifdef TORCHCORR_X86_ISA_LEVELS
bool has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma");
}
bool has_avx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
bool always() { return true; }

const IsaLevel kLevels[] = {
#ifdef TORCHCORR_X86_ISA_LEVELS
    {"avx512", &avx512_kernels, has_avx512},
    {"avx2", &avx2_kernels, has_avx2},
#endif
    {"baseline", &baseline_kernels, always},
};

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

std::string join(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

const CpuKernels& choose() {
  const char* forced = std::getenv("TORCHCORR_CPU_ISA");
  if (forced == nullptr || *forced == '\0') {
    for (const auto& level : kLevels)
      if (level.supported()) return *level.kernels;
  }
  for (const auto& level : kLevels) {
    if (lowercase(forced) != level.name) continue;
    TORCH_CHECK(level.supported(), "TORCHCORR_CPU_ISA=", forced, " names a level this CPU does not support; it supports ",
                join(supported_cpu_isas()));
    return *level.kernels;
  }
  TORCH_CHECK(false, "TORCHCORR_CPU_ISA=", forced, " is not a level compiled into torchcorr; choose one of ",
              join(compiled_cpu_isas()), " (or unset it for the best this CPU supports)");
}

}  // namespace

const CpuKernels& cpu_kernels() {
  static const CpuKernels& chosen = choose();  // once; a failed choice is retried (and fails) on every call
  return chosen;
}

std::vector<std::string> compiled_cpu_isas() {
  std::vector<std::string> names;
  for (const auto& level : kLevels) names.push_back(level.name);
  return names;
}

std::vector<std::string> supported_cpu_isas() {
  std::vector<std::string> names;
  for (const auto& level : kLevels)
    if (level.supported()) names.push_back(level.name);
  return names;
}

}  // namespace torchcorr::cpu
