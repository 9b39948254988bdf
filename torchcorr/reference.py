"""Pure-PyTorch cross-correlation, built from slicing and einsum only (never F.conv*).

The oracle for gradcheck tests and the fallback when the native library cannot load. Every step is
an ordinary differentiable tensor op, so it is differentiable any number of times. It loops over the
R*S kernel taps; each tap contributes a channel contraction of a strided view of the padded input:

    y[n, k, p, q] += sum_c x_pad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw] * w[k, c, r, s]
"""

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from ._args import AUTOCAST_DEVICE_TYPES, flip_kernel, output_size, parse, restore_rank


def _without_autocast(device_type):
    """The taps are summed in the dtype chosen here, whatever an enclosing torch.autocast says."""
    if device_type in AUTOCAST_DEVICE_TYPES:
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def corr2d_nchw(input: Tensor, weight: Tensor, bias, stride, padding, dilation, groups) -> Tensor:
    """The 4-D correlation on already-checked arguments (see torchcorr._args.parse).

    float16 and bfloat16 are computed in float32 and rounded once at the end, like the native kernels.
    """
    dtype = input.dtype
    if dtype in (torch.float16, torch.bfloat16):
        input, weight = input.float(), weight.float()
        bias = None if bias is None else bias.float()
    N, C, H, W = input.shape
    K, Cg, R, S = weight.shape
    P, Q = output_size(H, W, R, S, stride, padding, dilation)
    padded = F.pad(input, (padding[1], padding[1], padding[0], padding[0]))
    grouped_weight = weight.reshape(groups, K // groups, Cg, R, S)
    output = input.new_zeros((N, groups, K // groups, P, Q))
    with _without_autocast(input.device.type):
        for r in range(R):
            for s in range(S):
                row, col = r * dilation[0], s * dilation[1]
                tap = padded[:, :, row:row + stride[0] * (P - 1) + 1:stride[0],
                             col:col + stride[1] * (Q - 1) + 1:stride[1]]
                tap = tap.reshape(N, groups, Cg, P, Q)
                output = output + torch.einsum("ngcpq,gkc->ngkpq", tap, grouped_weight[..., r, s])
    output = output.reshape(N, K, P, Q)
    if bias is not None:
        output = output + bias.reshape(1, K, 1, 1)
    return output.to(dtype)


def corr2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """Cross-correlation with F.conv2d's semantics (and the D2L 2-D form), in plain tensor ops."""
    args = parse("torchcorr.reference.corr2d", input, weight, bias, stride, padding, dilation, groups)
    output = corr2d_nchw(*args[:7])
    return restore_rank(output, args.input_rank)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """Strict convolution: correlation with the kernel flipped in both spatial dimensions."""
    return corr2d(input, flip_kernel(weight), bias, stride, padding, dilation, groups)
