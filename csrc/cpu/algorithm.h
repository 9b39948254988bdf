// The one place a CPU algorithm is chosen for a problem (the kernels inside each family choose their own
// register tiles: kernels/direct_correlation.h, kernels/weight_grad.h, kernels/gemm.h).
//
//   family   problems (one group, at least kGemmMinChannels     why (measured per op on the layers of the
//            input and output channels)                         torchvision models, 2 threads, AVX-512)
//   gemm     1x1 kernel without padding, any stride: every op   a matrix product per image: the GEMM reuses
//                                                               both operands from L1/L2; up to 3x faster than
//                                                               the direct tiles, which stream the weights
//                                                               (as fast on most layers; 0.6-0.9x on the
//                                                               16-channel 112x112 one)
//   gemm     channels-last weight gradients of stems (fewer     each kernel row of a window is one run of
//            input channels, at least 8 output channels)        S*C input values (3 -> 16-96 channels: 1.2-1.8x)
//   gemm     weight gradient of any kernel on planes of at      few pixels per image: the direct weight
//            most kGemmMaxWindowPixels outputs                  gradient's tiles are mostly halo and setup
//                                                               (512ch 7x7 3x3: 1.6x faster as a GEMM)
//   gemm     channels-last weight gradients of layers strided   a window's kernel rows are runs of S*C
//            both ways                                          values, each pixel read about R*S/4 times
//                                                               (3x3 and 2x2 stride 2, 64-384 channels on
//                                                               14x14-56x56: 1.0-1.8x faster; stride 1
//                                                               reads each pixel R*S times: 0.3-0.6x)
//   gemm     weight gradient of one image's grouped layer       a product per group, every group in
//            (planes; at least 8 outputs and 16 taps per        parallel: per-sample gradients, which vmap
//            group)                                             folds into groups (64 x 16 -> 32 3x3 on 8x8:
//                                                               7x faster than the direct kernel's one task)
//   winograd every op of stride-1, dilation-1 3x3 layers in       F(4x4, 3x3) or F(2x2, 3x3), and F(3x3, 2x2)
//            float32 (float16 and bfloat16 computed in float32;  for the weight gradient:
//            weight gradients with at least 48 tiles of 2x2,    2.25-4x fewer multiplications than the direct
//            algorithm.cpp); float64 stays direct               tiles, as batched products on the GEMM
//                                                               micro-kernel (kernels/winograd.h)
//   direct   everything else: forward and input gradient of     staging + register tiles
//            kxk layers (the windowed GEMM measured slower:     (kernels/direct_correlation.h)
//            its packing gathers every tap), single-channel
//            images, few channels, depthwise and grouped
//
// The gemm family can compute every op of every one-group layer (strided kxk input gradients one stride phase
// at a time, input_grad_phases.h): torchcorr.backends.cpu.flags(gemm_everywhere=True) forces it (tests), and
// torchcorr.backends.cpu.gemm = False turns it off (to compare, or to work around a bug);
// torchcorr.backends.cpu.winograd = False sends Winograd's layers to the direct kernels.
//
// Layout. A result torch would return channels_last (either operand is) is computed in channels_last:
//   gemm     1x1 layers, every op: a plain product over the pixels of the whole batch; weight gradients on
//            small planes: gy read across, the input windows gathered from pixels
//   direct   staging transposes rows of pixels into the planes the tiles compute on, outputs are written
//            channels-last, gy staged pixel-major by copies; depthwise layers with channels across the lanes
//            are staged by copies (kernels/channel_vectors.h)
// The windowed GEMM's forward pass and input gradient (gemm_everywhere only) copy to planes and back.
#pragma once

#include "../corr2d.h"
#include "direct_corr.h"

#include <ATen/core/Tensor.h>

namespace torchcorr::cpu {

enum class Algorithm { direct, gemm, winograd };
enum class Op { forward, input_grad, weight_grad };

// The family for op of p computed in dtype `compute` (float or double: compute_dtype) and `layout`.
Algorithm choose_algorithm(const Corr2dProblem& p, Op op, at::ScalarType compute, Layout layout);

// How Winograd computes d, the correlation of a forward pass or an input gradient (the weight gradient's output
// tile is 2).
WinogradPlan winograd_plan(const DirectProblem& d);

// A 1x1 kernel without padding: its input windows are the input pixels themselves.
inline bool is_pointwise(const Corr2dProblem& p) { return p.R == 1 && p.S == 1 && p.pad_h == 0 && p.pad_w == 0; }

// The layout op's kernels compute p in, given the layout of its result.
Layout compute_layout(const Corr2dProblem& p, Op op, at::ScalarType compute, at::MemoryFormat result);

// The windowed GEMM for any op and kernel, whatever choose_algorithm says (tests reach it through this).
void set_gemm_everywhere(bool everywhere);

bool gemm_enabled();
void set_gemm_enabled(bool enabled);
bool winograd_enabled();
void set_winograd_enabled(bool enabled);

}  // namespace torchcorr::cpu
