"""The public functions: corr2d (cross-correlation) and conv2d (strict convolution).

A plain call (4-D tensors on a native device, int or pair arguments) goes straight to the native op, which
checks it: Python's argument handling was most of a small layer's call. Every other call, and every call the
op refuses, has its arguments normalised (torchcorr._args.parse) and checked by the op's own checks under this
function's name, then goes to the native op for the tensor's device, or to the pure-PyTorch reference where
there is none.
"""

import warnings

import torch
from torch import Tensor

from . import _native
from ._args import flip_kernel, parse, restore_rank
from .reference import corr2d_nchw

_warned_devices = set()


def _use_native(input: Tensor) -> bool:
    if input.is_cpu and _native.CPU_IS_NATIVE:  # the common case, without building a torch.device
        return True
    device = input.device
    if device.type in _native.NATIVE_DEVICE_TYPES:
        return True
    if _native.library is not None and device.type not in _warned_devices:
        _warned_devices.add(device.type)
        warnings.warn(f"torchcorr has no native kernels for {device.type} tensors in this build "
                      "(torchcorr.build_info() says how it was built); using the pure-PyTorch reference, "
                      "which is correct but slow.", RuntimeWarning, stacklevel=3)
    return False


def _plain_pair(value) -> bool:
    kind = type(value)
    return kind is int or (kind is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int)


def _direct_call(input, weight, bias, stride, padding, dilation, groups) -> bool:
    """Whether the op can take the arguments as they are: 4-D tensors together on a native device, ints or
    pairs of ints, and nothing for Python to do (no autocast cast, no compilation tracing this function). The
    op checks them itself; `parse` only runs to name a problem it reports."""
    if not (type(input) is Tensor and isinstance(weight, Tensor) and (bias is None or isinstance(bias, Tensor))
            and input.dim() == 4 and type(groups) is int and _plain_pair(stride) and _plain_pair(padding)
            and _plain_pair(dilation)):
        return False
    if input.is_cpu:  # where the tensors are: a meta weight would take the op to its shape-only kernel
        together = _native.CPU_IS_NATIVE and weight.is_cpu and (bias is None or bias.is_cpu)
    else:
        together = (input.is_cuda and _native.CUDA_IS_NATIVE and weight.device == input.device and
                    (bias is None or bias.device == input.device))
    return together and not torch._C._is_any_autocast_enabled() and not torch.compiler.is_compiling()


def corr2d(input: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """2-D cross-correlation with the semantics of torch.nn.functional.conv2d.

    input: (N, C, H, W) or unbatched (C, H, W), with weight (K, C/groups, kh, kw); or the D2L form,
    a 2-D image (H, W) with a 2-D kernel (kh, kw), which returns a 2-D result.
    stride, padding and dilation take an int or a pair; padding also takes 'same' or 'valid'.
    """
    if _direct_call(input, weight, bias, stride, padding, dilation, groups):
        try:
            return _native.forward_op(input, weight, bias, stride, padding, dilation, groups)
        except (TypeError, ValueError, RuntimeError):
            pass  # parse names the problem in this function's words, or the op reports it again below
    args = parse("torchcorr.corr2d", input, weight, bias, stride, padding, dilation, groups)
    problem = args[:7]
    if _use_native(args.input):
        output = _native.forward_op(*problem)
    else:
        output = corr2d_nchw(*problem)
    return restore_rank(output, args.input_rank)


def conv2d(input: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    """Strict 2-D convolution: corr2d with the kernel flipped in both spatial dimensions."""
    return corr2d(input, flip_kernel(weight), bias, stride, padding, dilation, groups)
