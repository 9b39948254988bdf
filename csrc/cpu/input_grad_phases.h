// The stride phases of a strided layer's input gradient, shared by the direct and gemm families.
//
// Phase (first_h, first_w) of gx, its rows first_h + a*sh and columns likewise, is a stride-1 correlation of
// gy with the kernel taps that reach it: only the rows r with (first_h + ph - r*dh) divisible by sh, read in
// descending order, gy rows a + (first_h + ph - r*dh) / sh (likewise columns). No multiply-add is spent on the
// zeros a zero-inserted gy would have.
#pragma once

#include "cpu_kernel_utils.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
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

// taps[g*Cg + c, k, r', s'] = w[g*Kg + k, c, rows.taps[r'], cols.taps[s']] (contiguous, C x Kg x R' x S'), from w
// contiguous or channels last.
inline at::Tensor phase_weights(const Corr2dProblem& p, const at::Tensor& w, const PhaseTaps& rows,
                                const PhaseTaps& cols) {
  const int64_t Kg = p.K_per_group(), Cg = p.C_per_group(), R = rows.taps.size(), S = cols.taps.size();
  auto taps = at::empty({p.C, Kg, R, S}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "phase_weights", [&] {
    const scalar_t* from = w.const_data_ptr<scalar_t>();
    scalar_t* to = taps.mutable_data_ptr<scalar_t>();
    // 16 x 16 tiles of (c, k): the tile's reads of w and its writes of taps both stay within a few KB.
    constexpr int64_t kTile = 16;
    const int64_t c_tiles = div_up(Cg, kTile), k_tiles = div_up(Kg, kTile), RS = p.R * p.S, taps_per = R * S;
    const bool channels_last = weight_layout(w) == WeightLayout::krsc;
    const int64_t k_stride = Cg * RS, c_stride = channels_last ? 1 : RS, tap_stride = channels_last ? Cg : 1;
    std::vector<int64_t> offsets;  // the phase's taps within a kernel, in (r', s') order
    for (int64_t r : rows.taps)
      for (int64_t s : cols.taps) offsets.push_back((r * p.S + s) * tap_stride);
    at::parallel_for(0, p.groups * c_tiles * k_tiles, 1, [&](int64_t begin, int64_t end) {
      const int64_t* offset = offsets.data();
      for (int64_t tile = begin; tile < end; ++tile) {
        const int64_t g = tile / (c_tiles * k_tiles), c0 = tile / k_tiles % c_tiles * kTile;
        const int64_t k0 = tile % k_tiles * kTile;
        const int64_t k1 = std::min(Kg, k0 + kTile);
        for (int64_t c = c0; c < std::min(Cg, c0 + kTile); ++c) {
          const scalar_t* kernel = from + (g * Kg + k0) * k_stride + c * c_stride;
          scalar_t* phase = to + ((g * Cg + c) * Kg + k0) * taps_per;
          for (int64_t k = k0; k < k1; ++k, kernel += k_stride, phase += taps_per)
            for (int64_t i = 0; i < taps_per; ++i) phase[i] = kernel[offset[i]];
        }
      }
    });
  });
  return taps;
}

// Whether some tap reaches every phase, so that the phases write every pixel of gx (else gx starts at zero).
inline bool phases_cover_plane(const Corr2dProblem& p) {
  for (int64_t first_h = 0; first_h < std::min(p.stride_h, p.H); ++first_h)
    if (phase_taps(first_h, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h).taps.empty()) return false;
  for (int64_t first_w = 0; first_w < std::min(p.stride_w, p.W); ++first_w)
    if (phase_taps(first_w, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w).taps.empty()) return false;
  return true;
}

// Calls body(first_h, first_w, rows, cols, taps) for every phase some tap reaches, taps = phase_weights(...).
// Later phases than the plane has are empty, and phases no tap reaches keep the zeros gx starts with.
template <typename Body>
void for_each_phase(const Corr2dProblem& p, const at::Tensor& w, const Body& body) {
  for (int64_t first_h = 0; first_h < std::min(p.stride_h, p.H); ++first_h) {
    const auto rows = phase_taps(first_h, p.H, p.R, p.stride_h, p.pad_h, p.dilation_h);
    for (int64_t first_w = 0; first_w < std::min(p.stride_w, p.W); ++first_w) {
      const auto cols = phase_taps(first_w, p.W, p.S, p.stride_w, p.pad_w, p.dilation_w);
      if (rows.taps.empty() || cols.taps.empty() || rows.outputs == 0 || cols.outputs == 0) continue;
      body(first_h, first_w, rows, cols, phase_weights(p, w, rows, cols));
    }
  }
}

}  // namespace torchcorr::cpu
