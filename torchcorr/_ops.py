"""Fake kernels for the native ops, torch.ops.torchcorr.*: the shapes, dtypes and layouts of their results,
for torch.compile, torch.export and meta tensors.

The ops' autograd is in C++ (csrc/autograd/corr2d_autograd.cpp): each op is linear in each tensor argument
and its derivatives are the other ops, so gradients of any order come from the same kernels.
"""

import torch
from torch._prims_common import suggest_memory_format

from ._args import output_size

ops = torch.ops.torchcorr


def _empty_result(shape, first, second):
    """The result's layout: channels_last when either operand is, as torch's conv2d (and our kernels) decide."""
    layout = (torch.channels_last if torch.channels_last in (suggest_memory_format(first), suggest_memory_format(second))
              else torch.contiguous_format)
    return torch.empty(shape, dtype=first.dtype, device=first.device, memory_format=layout)


@torch.library.register_fake("torchcorr::corr2d_forward")
def _forward_fake(input, weight, bias, stride, padding, dilation, groups):
    rows, cols = output_size(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3],
                             stride, padding, dilation)
    return _empty_result((input.shape[0], weight.shape[0], rows, cols), input, weight)


@torch.library.register_fake("torchcorr::corr2d_input_grad")
def _input_grad_fake(grad_output, weight, input_size, stride, padding, dilation, groups):
    return _empty_result((grad_output.shape[0], weight.shape[1] * groups, *input_size), grad_output, weight)


@torch.library.register_fake("torchcorr::corr2d_weight_grad")
def _weight_grad_fake(grad_output, input, weight_size, stride, padding, dilation, groups):
    return _empty_result((grad_output.shape[1], input.shape[1] // groups, *weight_size), grad_output, input)


@torch.library.register_fake("torchcorr::corr2d_bias_grad")
def _bias_grad_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))
