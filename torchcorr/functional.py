"""The public functions: corr2d (cross-correlation) and conv2d (strict convolution).

Arguments are normalised once (torchcorr._args.parse), then the 4-D problem goes to the native op
for the tensor's device, or to the pure-PyTorch reference where there is none.
"""

import warnings

import torch
from torch import Tensor

from . import _native
from ._transforms import Config, Forward, transformed
from ._args import flip_kernel, parse, restore_rank
from .reference import corr2d_nchw

_warned_devices = set()


def _use_native(device: torch.device) -> bool:
    if device.type in _native.NATIVE_DEVICE_TYPES:
        return True
    if _native.library is not None and device.type not in _warned_devices:
        _warned_devices.add(device.type)
        warnings.warn(f"torchcorr has no native kernels for {device.type} tensors in this build "
                      "(torchcorr.build_info() says how it was built); using the pure-PyTorch reference, "
                      "which is correct but slow.", RuntimeWarning, stacklevel=3)
    return False


def corr2d(input: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D cross-correlation with the semantics of torch.nn.functional.conv2d.

    input: (N, C, H, W) or unbatched (C, H, W), with weight (K, C/groups, kh, kw); or the D2L form,
    a 2-D image (H, W) with a 2-D kernel (kh, kw), which returns a 2-D result.
    stride, padding and dilation take an int or a pair; padding also takes 'same' or 'valid'.
    """
    args = parse("torchcorr.corr2d", input, weight, bias, stride, padding, dilation, groups)
    problem = args[:7]
    if _use_native(args.input.device):
        if transformed(*problem[:3]):  # under torch.func: the Python autograd.Functions
            output = Forward.apply(*problem[:3], Config(*problem[3:]))
        else:
            output = torch.ops.torchcorr.corr2d_forward.default(*problem)
    else:
        output = corr2d_nchw(*problem)
    return restore_rank(output, args.input_rank)


def conv2d(input: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """Strict 2-D convolution: corr2d with the kernel flipped in both spatial dimensions."""
    return corr2d(input, flip_kernel(weight), bias, stride, padding, dilation, groups)
