// The CPU kernels, compiled once per instruction-set level into one library; the best level the running
// CPU supports is chosen once, on first use (cpu_kernels.cpp holds the table of levels).
//
// Each level is a table of function pointers, filled by csrc/cpu/isa/<level>.cpp from the kernel headers
// in csrc/cpu/kernels/, which that file compiles for its level (kernels/isa.h says how). The ops
// (corr2d_*.cpp), the argument checks and everything else are compiled once, for the baseline.
#pragma once

#include "direct_corr.h"
#include "gemm_problem.h"

#include <string>
#include <type_traits>
#include <vector>

namespace torchcorr::cpu {

template <typename T>
struct KernelsFor {
  // y (N x K planes on `grid`) from x (N x C x H x W), both dense in d.layout, and w; bias may be null. Each
  // output is one task's sum over (c, r, s) in that order: deterministic (kernels/direct_correlation.h).
  void (*direct_correlation)(const DirectProblem& d, const T* x, const T* w, WeightOrder order, const T* bias,
                             T* y, const OutputGrid& grid);
  // gx of a strided layer (zero to start) from gy, both dense in the phases' layout: the direct engine one phase
  // after another, or depthwise layers all phases at once (kernels/channel_vectors.h).
  void (*input_grad_phases)(const std::vector<InputGradPhase<T>>& phases, const T* gy, T* gx);
  // gw (K x C/groups x R x S) from gy and x dense in `layout`, in an order fixed by the sizes
  // (kernels/weight_grad.h); stored as `wanted` where the kernel can (returns the layout it wrote).
  WeightLayout (*weight_grad)(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                              WeightLayout wanted);
  // C (+)= A · B, batched or summed over the batch, cache-blocked (kernels/gemm.h): 1x1 layers.
  void (*gemm)(const GemmProblem<T>& problem);
  // y as direct_correlation computes it, for stride-1 3x3 problems of one group, by Winograd's F(m x m, 3x3)
  // as planned (kernels/winograd.h): deterministic.
  void (*winograd)(const DirectProblem& d, WinogradPlan plan, const T* x, const T* w, WeightOrder order,
                   const T* bias, T* y);
  // gw as weight_grad computes it, for stride-1 3x3 layers of one group, by Winograd's F(3x3, 2x2).
  WeightLayout (*winograd_weight_grad)(const Corr2dProblem& p, Layout layout, const T* gy, const T* x, T* gw,
                                       WeightLayout wanted);
};

struct CpuKernels {
  const char* isa;  // "avx512", "avx2" or "baseline"
  KernelsFor<float> f32;
  KernelsFor<double> f64;

  template <typename T>
  const KernelsFor<T>& of() const {
    if constexpr (std::is_same_v<T, float>) {
      return f32;
    } else {
      static_assert(std::is_same_v<T, double>);
      return f64;
    }
  }
};

// The levels compiled into this library, best first, each defined by csrc/cpu/isa/<level>.cpp.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TORCHCORR_X86_ISA_LEVELS 1
extern const CpuKernels avx512_kernels;
extern const CpuKernels avx2_kernels;
#endif
extern const CpuKernels baseline_kernels;

// The kernels of the chosen level: the best the CPU supports, or the one TORCHCORR_CPU_ISA names (an
// error, raised as a Python RuntimeError, when it names a level not compiled or not supported here).
const CpuKernels& cpu_kernels();

// Names of the levels compiled in, best first, and of those the running CPU supports.
std::vector<std::string> compiled_cpu_isas();
std::vector<std::string> supported_cpu_isas();

}  // namespace torchcorr::cpu
