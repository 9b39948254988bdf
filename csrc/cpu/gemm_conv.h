// Correlations as matrix products (Algorithm::gemm in algorithm.h), on contiguous NCHW operands in the compute
// dtype, one group. Per image n, with X[n] the input windows (C*R*S x P*Q, never stored: gemm_problem.h):
//   forward        y[n]  = w (K x C*R*S) · X[n] + b
//   input grad     gx[n] = w' (C x K*R*S) · GY[n], GY[n] the windows of gy[n] padded by dilation*(kernel-1) -
//                  padding, w' the kernel flipped with its channel axes swapped (stride 1; a strided 1x1
//                  layer writes the pixels it read and leaves zeros between them; a strided kxk layer is one
//                  such product per stride phase, with the taps that reach it: input_grad_phases.h)
//   weight grad    gw    = sum_n gy[n] (K x P*Q) · X[n]^T
// A 1x1 layer without padding reads its input directly (X[n] = x[n], strided pixels gathered into a plane).
// In channels last (1x1 layers only) the pixels of the whole batch are the rows of one product:
//   forward y = x (pixels x C) · w^T + b, input grad gx = gy (pixels x K) · w, weight grad gw = gy^T · x.
#pragma once

#include "../corr2d.h"
#include "direct_corr.h"

#include <optional>

namespace torchcorr::cpu {

// Operands dense in `layout` (weights contiguous or channels last, bias contiguous); results in `layout` (the
// weight gradient in channels last as (K, R, S, C) where that is how it is computed).
at::Tensor gemm_forward(const Corr2dProblem& p, Layout layout, const at::Tensor& x, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias);
at::Tensor gemm_input_grad(const Corr2dProblem& p, Layout layout, const at::Tensor& gy, const at::Tensor& w);
at::Tensor gemm_weight_grad(const Corr2dProblem& p, Layout layout, const at::Tensor& gy, const at::Tensor& x);

}  // namespace torchcorr::cpu
