// The stride phases of a strided layer's input gradient, shared by the direct and gemm families.
//
// Phase (first_h, first_w) of gx, its rows first_h + a*sh and columns likewise, is a stride-1 correlation of
// gy with the kernel taps that reach it: only the rows r with (first_h + ph - r*dh) divisible by sh, read in
// descending order, gy rows a + (first_h + ph - r*dh) / sh (likewise columns). No multiply-add is spent on the
// zeros a zero-inserted gy would have.
#pragma once

#include "cpu_kernel_utils.h"

#include <ATen/ATen.h>

#include <numeric>
#include <vector>

namespace torchcorr::cpu {

// The kernel taps (along one axis) that reach output phase `first` of the gradient, and how they read gy.
struct PhaseTaps {
  std::vector<int64_t> taps;  // kernel indices, descending
  int64_t spacing;            // gy step between consecutive taps
  int64_t offset;             // the virtual input's zero offset: gy index a + k*spacing - offset
  int64_t outputs;            // gradient rows (or columns) in the phase
};

inline PhaseTaps phase_taps(int64_t first, int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                            int64_t dilation) {
  PhaseTaps phase{{}, dilation / std::gcd(dilation, stride), 0, first < size ? div_up(size - first, stride) : 0};
  for (int64_t r = kernel - 1; r >= 0; --r) {
    const int64_t reach = first + pad - r * dilation;  // stride * (gy index - a)
    if (reach % stride == 0) phase.taps.push_back(r);
  }
  if (!phase.taps.empty()) phase.offset = -((first + pad - phase.taps[0] * dilation) / stride);
  return phase;
}

// Calls body(first_h, first_w, rows, cols, taps) for every phase some tap reaches, where taps[g*Cg + c, k,
// r', s'] = w[g*Kg + k, c, rows.taps[r'], cols.taps[s']] (contiguous, C x Kg x R' x S'). Later phases than
// the plane has are empty, and phases no tap reaches keep the zeros gx starts with.
template <typename Body>
void for_each_phase(const Corr2dProblem& p, const at::Tensor& w, const Body& body) {
  const int64_t Kg = p.K_per_group(), Cg = p.C_per_group();
  const auto w_t = w.view({p.groups, Kg, Cg, p.R, p.S}).transpose(1, 2);
  for (int64_t first_h = 0; first_h < std::min(p.stride_h, p.H); ++first_h) {
    const auto rows = phase_taps(first_h, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t first_w = 0; first_w < std::min(p.stride_w, p.W); ++first_w) {
      const auto cols = phase_taps(first_w, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
      if (rows.taps.empty() || cols.taps.empty() || rows.outputs == 0 || cols.outputs == 0) continue;
      const int64_t R = rows.taps.size(), S = cols.taps.size();
      const auto taps = w_t.index_select(3, at::tensor(rows.taps))
                            .index_select(4, at::tensor(cols.taps))
                            .reshape({p.C, Kg, R, S})
                            .contiguous();
      body(first_h, first_w, rows, cols, taps);
    }
  }
}

}  // namespace torchcorr::cpu
