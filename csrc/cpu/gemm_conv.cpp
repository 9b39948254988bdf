#include "gemm_conv.h"

#include "algorithm.h"
#include "cpu_kernels.h"
#include "input_grad_phases.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

namespace torchcorr::cpu {
namespace {

using at::indexing::None;
using at::indexing::Slice;

// Columns of a product up to which the padding of its last vector strip costs more than a transposed copy.
constexpr int64_t kFewColumns = 64;

bool strided(const Corr2dProblem& p) { return p.stride_h > 1 || p.stride_w > 1; }

// The input pixels a 1x1 layer reads, as a dense N x C x P x Q tensor in x's layout.
at::Tensor read_pixels(const Corr2dProblem& p, Layout layout, const at::Tensor& x) {
  return strided(p) ? x.index({Slice(), Slice(), Slice(0, None, p.stride_h), Slice(0, None, p.stride_w)})
                          .contiguous(memory_format(layout))
                    : x;
}

// A dense channels-last N x C x H x W tensor read as one (N*H*W) x C matrix (pixels x channels), or its
// transpose: a 1x1 layer in channels last is one product over every pixel of the batch.
template <typename T>
GemmOperand<T> pixel_rows(const at::Tensor& t, bool transposed = false) {
  const int64_t channels = t.size(1);
  return transposed ? GemmOperand<T>{t.const_data_ptr<T>(), 1, channels, 0}
                    : GemmOperand<T>{t.const_data_ptr<T>(), channels, 1, 0};
}

// The rows x cols matrices of a contiguous N x rows x H x W tensor (batch entry n = image n), or their transposes.
template <typename T>
GemmOperand<T> images(const at::Tensor& t, bool transposed = false) {
  const int64_t rows = t.size(1), cols = t.size(2) * t.size(3);
  return transposed ? GemmOperand<T>{t.const_data_ptr<T>(), 1, cols, rows * cols}
                    : GemmOperand<T>{t.const_data_ptr<T>(), cols, 1, rows * cols};
}

// A contiguous tensor read as one matrix of `rows` rows, shared by every batch entry.
template <typename T>
GemmOperand<T> matrix(const at::Tensor& t, int64_t rows) {
  return {t.const_data_ptr<T>(), t.numel() / rows, 1, 0};
}

// A 1x1 layer's K x C weights read as the C x K matrix w^T.
template <typename T>
GemmOperand<T> weights_transposed(const Corr2dProblem& p, const at::Tensor& w) {
  return {w.const_data_ptr<T>(), 1, p.C, 0};
}

ConvWindows forward_windows(const Corr2dProblem& p, bool transposed) {
  return {p.H, p.W, p.R, p.S, p.Q, p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dilation_h, p.dilation_w, transposed};
}

template <typename T>
const T* bias_data(const std::optional<at::Tensor>& bias) {
  return bias.has_value() ? bias->const_data_ptr<T>() : nullptr;
}

template <typename T>
void run_gemm(const GemmProblem<T>& g) {
  cpu_kernels().of<T>().gemm(g);
}

}  // namespace

at::Tensor gemm_forward(const Corr2dProblem& p, Layout layout, const at::Tensor& x, const at::Tensor& w,
                        const std::optional<at::Tensor>& bias) {
  // The products overwrite y, with the bias added.
  auto y = empty_activation({p.N, p.K, p.P, p.Q}, x.options(), layout);
  const auto pixels = is_pointwise(p) ? read_pixels(p, layout, x) : x;
  if (layout == Layout::channels_last) {  // y (pixels x K) = x (pixels x C) · w^T (C x K)
    TORCH_INTERNAL_ASSERT(is_pointwise(p));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gemm_forward_cpu", [&] {
      run_gemm<scalar_t>({p.N * p.P * p.Q, p.K, p.C, 1, false, pixel_rows<scalar_t>(pixels),
                          weights_transposed<scalar_t>(p, w), y.mutable_data_ptr<scalar_t>(), p.K, 0,
                          GemmStart::column_bias, bias_data<scalar_t>(bias)});
    });
    return y;
  }
  const ConvWindows windows = forward_windows(p, false);
  const auto kernels = w.contiguous();  // K x (C, R, S)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gemm_forward_cpu", [&] {
    GemmOperand<scalar_t> b = images<scalar_t>(pixels);
    if (!is_pointwise(p)) b.windows = &windows;
    run_gemm<scalar_t>({p.K, p.P * p.Q, p.C * p.R * p.S, p.N, false, matrix<scalar_t>(kernels, p.K), b,
                        y.mutable_data_ptr<scalar_t>(), p.P * p.Q, p.K * p.P * p.Q, GemmStart::row_bias,
                        bias_data<scalar_t>(bias)});
  });
  return y;
}

at::Tensor gemm_input_grad(const Corr2dProblem& p, Layout layout, const at::Tensor& gy, const at::Tensor& w) {
  if (is_pointwise(p)) {
    auto dense = empty_activation({p.N, p.C, p.P, p.Q}, gy.options(), layout);
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_input_grad_cpu", [&] {
      if (layout == Layout::channels_last) {  // gx (pixels x C) = gy (pixels x K) · w (K x C)
        return run_gemm<scalar_t>({p.N * p.P * p.Q, p.C, p.K, 1, false, pixel_rows<scalar_t>(gy),
                                   matrix<scalar_t>(w, p.K), dense.mutable_data_ptr<scalar_t>(), p.C, 0,
                                   GemmStart::column_bias});
      }
      run_gemm<scalar_t>({p.C, p.P * p.Q, p.K, p.N, false, weights_transposed<scalar_t>(p, w), images<scalar_t>(gy),
                          dense.mutable_data_ptr<scalar_t>(), p.P * p.Q, p.C * p.P * p.Q, GemmStart::row_bias});
    });
    if (!strided(p)) return dense;
    auto gx = empty_activation({p.N, p.C, p.H, p.W}, gy.options(), layout).zero_();
    gx.index_put_({Slice(), Slice(), Slice(0, None, p.stride_h), Slice(0, None, p.stride_w)}, dense);
    return gx;
  }
  TORCH_INTERNAL_ASSERT(layout == Layout::planes, "the windowed GEMM takes planes only");
  if (strided(p)) {
    auto gx = at::zeros({p.N, p.C, p.H, p.W}, gy.options());  // phases no tap reaches keep zeros
    // One product per stride phase, into a dense phase plane that is then written to the phase's pixels.
    for_each_phase(p, w, [&](int64_t first_h, int64_t first_w, const PhaseTaps& rows, const PhaseTaps& cols,
                             const at::Tensor& taps) {
      const int64_t R = taps.size(2), S = taps.size(3);
      const ConvWindows windows{p.P, p.Q, R, S, cols.outputs, 1, 1, rows.offset, cols.offset,
                                rows.spacing, cols.spacing, false};
      auto phase = at::empty({p.N, p.C, rows.outputs, cols.outputs}, gy.options());
      AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_input_grad_cpu", [&] {
        GemmOperand<scalar_t> b = images<scalar_t>(gy);
        b.windows = &windows;
        run_gemm<scalar_t>({p.C, rows.outputs * cols.outputs, p.K * R * S, p.N, false, matrix<scalar_t>(taps, p.C),
                            b, phase.mutable_data_ptr<scalar_t>(), rows.outputs * cols.outputs,
                            p.C * rows.outputs * cols.outputs, GemmStart::row_bias});
      });
      gx.index_put_({Slice(), Slice(), Slice(first_h, None, p.stride_h), Slice(first_w, None, p.stride_w)}, phase);
    });
    return gx;
  }
  auto gx = at::empty({p.N, p.C, p.H, p.W}, gy.options());
  const auto adjoint = w.flip({2, 3}).transpose(0, 1).contiguous();  // C x K x R x S
  const ConvWindows windows{p.P, p.Q, p.R, p.S, p.W, 1, 1, p.dilation_h * (p.R - 1) - p.pad_h,
                            p.dilation_w * (p.S - 1) - p.pad_w, p.dilation_h, p.dilation_w, false};
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_input_grad_cpu", [&] {
    GemmOperand<scalar_t> b = images<scalar_t>(gy);
    b.windows = &windows;
    run_gemm<scalar_t>({p.C, p.H * p.W, p.K * p.R * p.S, p.N, false, matrix<scalar_t>(adjoint, p.C), b,
                        gx.mutable_data_ptr<scalar_t>(), p.H * p.W, p.C * p.H * p.W, GemmStart::row_bias});
  });
  return gx;
}

at::Tensor gemm_weight_grad(const Corr2dProblem& p, Layout layout, const at::Tensor& gy, const at::Tensor& x) {
  ConvWindows windows = forward_windows(p, true);
  if (p.groups > 1) {
    // One image: gw[g] (K/groups x C/groups*R*S) = gy[g] (K/groups x P*Q) · X[g]^T, one product per group, the
    // groups in parallel (per-sample weight gradients: torch.func's vmap folds the samples into groups). The
    // windows read x itself, strides and all.
    TORCH_INTERNAL_ASSERT(p.N == 1 && layout == Layout::planes, "grouped GEMM weight gradients: one image, planes");
    const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups, taps = Cg * p.R * p.S;
    auto gw = at::empty({p.K, Cg, p.R, p.S}, gy.options());  // overwritten by the products
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_weight_grad_cpu", [&] {
      const GemmOperand<scalar_t> a{gy.const_data_ptr<scalar_t>(), p.P * p.Q, 1, Kg * p.P * p.Q};
      const GemmOperand<scalar_t> b{x.const_data_ptr<scalar_t>(), 1, p.H * p.W, Cg * p.H * p.W, &windows};
      run_gemm<scalar_t>({Kg, taps, p.P * p.Q, p.groups, false, a, b, gw.mutable_data_ptr<scalar_t>(), taps,
                          Kg * taps, GemmStart::row_bias});
    });
    return gw;
  }
  const auto pixels = is_pointwise(p) ? read_pixels(p, layout, x) : x;
  if (layout == Layout::channels_last && !is_pointwise(p)) {
    // gw (K x R*S*C) = sum_n gy[n] (K x P*Q, read across) · X[n]^T, taps (r, s, c) as channels-last windows hold
    // them: gw in channels last.
    windows.channels_last = p.C;
    auto gw_rsc = at::zeros({p.K, p.R, p.S, p.C}, gy.options());
    AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_weight_grad_cpu", [&] {
      const GemmOperand<scalar_t> a{gy.const_data_ptr<scalar_t>(), 1, p.K, p.P * p.Q * p.K};
      const GemmOperand<scalar_t> b{x.const_data_ptr<scalar_t>(), 0, 0, p.H * p.W * p.C, &windows};
      run_gemm<scalar_t>({p.K, p.C * p.R * p.S, p.P * p.Q, p.N, true, a, b, gw_rsc.mutable_data_ptr<scalar_t>(),
                          p.C * p.R * p.S, 0});
    });
    return gw_rsc.permute({0, 3, 1, 2});
  }
  auto gw = at::zeros({p.K, p.C, p.R, p.S}, gy.options());
  AT_DISPATCH_FLOATING_TYPES(gy.scalar_type(), "gemm_weight_grad_cpu", [&] {
    if (layout == Layout::channels_last) {
      // gw (K x C) = gy^T (K x pixels) · x (pixels x C), or, when C is few and K more, its transpose, which puts
      // K across the vector lanes (columns) instead of a mostly padded C (16 -> 96 channels: 2x faster as
      // gw^T = x^T · gy), at the price of a transposed copy (192 -> 1152: 1.3x slower so).
      TORCH_INTERNAL_ASSERT(is_pointwise(p));
      if (p.C >= p.K || p.C >= kFewColumns) {
        return run_gemm<scalar_t>({p.K, p.C, p.N * p.P * p.Q, 1, true, pixel_rows<scalar_t>(gy, true),
                                   pixel_rows<scalar_t>(pixels), gw.mutable_data_ptr<scalar_t>(), p.C, 0});
      }
      auto gw_t = at::zeros({p.C, p.K}, gy.options());
      run_gemm<scalar_t>({p.C, p.K, p.N * p.P * p.Q, 1, true, pixel_rows<scalar_t>(pixels, true),
                          pixel_rows<scalar_t>(gy), gw_t.mutable_data_ptr<scalar_t>(), p.K, 0});
      gw.view({p.K, p.C}).copy_(gw_t.t());
      return;
    }
    GemmOperand<scalar_t> b = images<scalar_t>(pixels, true);
    if (!is_pointwise(p)) b.windows = &windows;
    run_gemm<scalar_t>({p.K, p.C * p.R * p.S, p.P * p.Q, p.N, true, images<scalar_t>(gy), b,
                        gw.mutable_data_ptr<scalar_t>(), p.C * p.R * p.S, 0});
  });
  return gw;
}

}  // namespace torchcorr::cpu
