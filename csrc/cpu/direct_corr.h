// The direct correlation engine behind the CPU forward pass and input gradient.
//
// Both are one computation over a "virtual input" V: the real planes X (H x W) shifted by `offset` zeros,
//   V(i, j) = X(i - offset_h, j - offset_w)  where that lands in X, else 0,
//   y[n,k,p,q] = bias[k] + sum_{c,r,s} V[n, g*Cg + c](p*sh + r*dh, q*sw + s*dw) * w[k,c,r,s]   (g = k / Kg).
// Forward: V = x zero-padded (offset = padding). Input gradient (stride 1): V = gy offset by
// dilation*(kernel - 1) - padding (negative: cropped), read through the flipped kernel whose channel axes
// are swapped (see input_grad_problem); strided layers go one stride phase at a time (corr2d_input_grad.cpp).
#pragma once

#include "../corr2d.h"

#include <algorithm>

namespace torchcorr::cpu {

// How a kernel's activations (x and y, gy and gx) are laid out: planes (N x C x H x W, torch's contiguous) or
// channels last (N x H x W x C, torch's channels_last). Every kernel but the windowed GEMM's forward pass and
// input gradient takes both (../algorithm.h, compute_layout).
enum class Layout { planes, channels_last };

// Channel c of pixel i of an image with `channels` channels of `pixels` pixels is at c * channel + i * pixel.
struct ChannelStrides {
  int64_t channel, pixel;
};
inline ChannelStrides channel_strides(Layout layout, int64_t channels, int64_t pixels) {
  return layout == Layout::channels_last ? ChannelStrides{1, channels} : ChannelStrides{pixels, 1};
}
// Where channel c of image n starts.
inline int64_t channel_start(Layout layout, int64_t n, int64_t c, int64_t channels, int64_t pixels) {
  return layout == Layout::channels_last ? n * pixels * channels + c : (n * channels + c) * pixels;
}

// How the stored kernel w[a, b, r, s] (a: output channel, b: input channel of its group) is laid out: torch's
// contiguous (a, b, r, s), or channels last (a, r, s, b), as a model in channels_last holds its weights (reading
// them so costs nothing; a copy to contiguous cost 1.3 ms per 512-channel 3x3 layer and call).
enum class WeightLayout { kcrs, krsc };

struct DirectProblem {
  int64_t N, C, H, W;  // real input planes
  int64_t K, R, S, groups;
  int64_t P, Q;  // output
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t offset_h, offset_w;
  Layout layout = Layout::planes;
  WeightLayout weights = WeightLayout::kcrs;

  int64_t C_per_group() const { return C / groups; }
  int64_t K_per_group() const { return K / groups; }
};

inline DirectProblem forward_problem(const Corr2dProblem& p) {
  return {p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.groups, p.P, p.Q,
          p.stride_h, p.stride_w, p.dilation_h, p.dilation_w, p.pad_h, p.pad_w};
}

// Strides, dilations and sizes the channel-vector kernels (kernels/channel_vectors.h) take, whatever the
// layout (those of real layers, and no index overflow).
inline bool channel_vector_sizes_fit(const DirectProblem& d) {
  constexpr int64_t kMaxStep = 8;
  if (d.P == 0 || d.Q == 0 || std::max({d.stride_h, d.stride_w, d.dilation_h, d.dilation_w}) > kMaxStep) return false;
  return d.P <= 1024 && d.Q <= 1024 && d.R <= 64 && d.S <= 64;
}

// Depthwise problems the channel-vector kernels take.
inline bool channel_vectors_fit(const DirectProblem& d) {
  return d.C_per_group() == 1 && d.K_per_group() == 1 && channel_vector_sizes_fit(d);
}

// For stride 1: gx = corr(V(gy), w') with w'[g*Cg + c, k, r, s] = w[g*Kg + k, c, R-1-r, S-1-s] (WeightOrder::adjoint).
inline DirectProblem input_grad_problem(const Corr2dProblem& p) {
  TORCH_INTERNAL_ASSERT(p.stride_h == 1 && p.stride_w == 1);
  return {p.N, p.K, p.P, p.Q, p.C, p.R, p.S, p.groups, p.H, p.W, 1, 1, p.dilation_h, p.dilation_w,
          p.dilation_h * (p.R - 1) - p.pad_h, p.dilation_w * (p.S - 1) - p.pad_w};
}

// How w holds the kernel: as given (K x C/groups x R x S), or as the forward kernel whose adjoint is wanted
// (C x K/groups x R x S, read as w'[g*Kg + k, c, r, s] = w[g*Cg + c, k, R-1-r, S-1-s]; see input_grad_problem).
enum class WeightOrder { as_given, adjoint };

// How the Winograd kernels (kernels/winograd.h) compute a correlation: F(m x m, 3x3) with m = output_tile (4 or 2),
// the kernels transformed per strip of output channels (strips) or once per call for blocks of tiles.
struct WinogradPlan {
  int output_tile;
  bool strips;
};

// Element strides of the stored kernel's axes: a, b and tap r*S + s (see WeightLayout).
struct WeightStrides {
  int64_t out, in, tap;
};
inline WeightStrides weight_strides(const DirectProblem& d, WeightOrder order) {
  const int64_t in = order == WeightOrder::as_given ? d.C_per_group() : d.K_per_group(), RS = d.R * d.S;
  return d.weights == WeightLayout::krsc ? WeightStrides{RS * in, 1, in} : WeightStrides{in * RS, RS, 1};
}

// Where the outputs go: output (p, q) is element (p*step_h + first_h, q*step_w + first_w) of planes of
// rows x cols (the input gradient of a strided correlation is computed one stride phase at a time).
struct OutputGrid {
  int64_t step_h, step_w, first_h, first_w, rows, cols;
  static OutputGrid dense(const DirectProblem& d) { return {1, 1, 0, 0, d.P, d.Q}; }
};

// One stride phase of a strided layer's input gradient (../input_grad_phases.h): the correlation `d` of gy
// with the phase's taps (weights as given, C x K/groups x R' x S'), written to the phase's pixels of gx.
template <typename T>
struct InputGradPhase {
  DirectProblem d;
  OutputGrid grid;
  const T* taps;
};

}  // namespace torchcorr::cpu
