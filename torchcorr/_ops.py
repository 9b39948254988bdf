"""Python registrations of the native ops, torch.ops.torchcorr.*: fake kernels (the shapes, dtypes and
layouts of their results, for torch.compile, torch.export and meta tensors) and vmap batching rules.

The ops' autograd, reverse and forward mode, is in C++ (csrc/autograd/corr2d_autograd.cpp), torch.func's
transforms included: each op is linear in each tensor argument and its derivatives are the other ops, so
derivatives of any order come from the same kernels; under vmap, the rules below fold the batch into the op.
"""

import torch
from torch._prims_common import suggest_memory_format

from ._args import output_size

ops = torch.ops.torchcorr


def _empty_result(shape, first, second, *others):
    """The result's layout: channels_last when either operand is, as torch's conv2d (and our kernels) decide.

    The operands must share a device, as the kernels check: a meta operand beside a CPU one brings the call
    here, which would otherwise answer a CPU call with a meta tensor."""
    for operand in (second, *others):
        if operand is not None and operand.device != first.device:
            raise RuntimeError(f"torchcorr: the operands are on {first.device} and {operand.device}; they must "
                               "be on one device")
    layout = (torch.channels_last if torch.channels_last in (suggest_memory_format(first), suggest_memory_format(second))
              else torch.contiguous_format)
    return torch.empty(shape, dtype=first.dtype, device=first.device, memory_format=layout)


@torch.library.register_fake("torchcorr::corr2d_forward")
def _forward_fake(input, weight, bias, stride, padding, dilation, groups):
    rows, cols = output_size(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3],
                             stride, padding, dilation)
    return _empty_result((input.shape[0], weight.shape[0], rows, cols), input, weight, bias)


@torch.library.register_fake("torchcorr::corr2d_input_grad")
def _input_grad_fake(grad_output, weight, input_size, stride, padding, dilation, groups):
    return _empty_result((grad_output.shape[0], weight.shape[1] * groups, *input_size), grad_output, weight)


@torch.library.register_fake("torchcorr::corr2d_weight_grad")
def _weight_grad_fake(grad_output, input, weight_size, stride, padding, dilation, groups):
    return _empty_result((grad_output.shape[1], input.shape[1] // groups, *weight_size), grad_output, input)


@torch.library.register_fake("torchcorr::corr2d_bias_grad")
def _bias_grad_fake(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


# vmap batching rules: the vmapped dimension is folded into the images where only the activations are
# batched, and into the groups otherwise (group b*G + g holds batch entry b's group g), as torch's own
# convolution rules do.

def _leading(t, dim, size):
    """t with its vmapped dimension first (a broadcast one where it has none)."""
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def _images_folded(t):
    """(B, N, C, H, W) -> (N, B*C, H, W): batch entry b's channels become groups b*G .. b*G + G - 1."""
    return t.transpose(0, 1).flatten(1, 2)


def _images_unfolded(t, size):
    """(N, B*C, H, W) -> (B, N, C, H, W)."""
    return t.unflatten(1, (size, -1)).transpose(0, 1)


@torch.library.register_vmap("torchcorr::corr2d_forward")
def _forward_vmap(info, in_dims, x, w, b, stride, padding, dilation, groups):
    x_dim, w_dim, b_dim = in_dims[:3]
    size = info.batch_size
    if w_dim is None:  # a batch of images: more images
        folded_bias = b if b_dim is None else None
        y = ops.corr2d_forward(_leading(x, x_dim, size).flatten(0, 1), w, folded_bias, stride, padding, dilation,
                               groups).unflatten(0, (size, -1))
    else:  # a batch of kernels: more groups
        folded_bias = _leading(b, b_dim, size).flatten() if b is not None else None
        y = _images_unfolded(ops.corr2d_forward(_images_folded(_leading(x, x_dim, size)),
                                                w.movedim(w_dim, 0).flatten(0, 1), folded_bias, stride, padding,
                                                dilation, groups * size), size)
    if b is not None and w_dim is None and b_dim is not None:
        y = y + b.movedim(b_dim, 0)[:, None, :, None, None]
    return y, 0


@torch.library.register_vmap("torchcorr::corr2d_input_grad")
def _input_grad_vmap(info, in_dims, gy, w, input_size, stride, padding, dilation, groups):
    gy_dim, w_dim = in_dims[:2]
    size = info.batch_size
    if w_dim is None:
        gx = ops.corr2d_input_grad(_leading(gy, gy_dim, size).flatten(0, 1), w, input_size, stride, padding, dilation,
                                   groups).unflatten(0, (size, -1))
    else:
        gx = _images_unfolded(ops.corr2d_input_grad(_images_folded(_leading(gy, gy_dim, size)),
                                                    w.movedim(w_dim, 0).flatten(0, 1), input_size, stride, padding,
                                                    dilation, groups * size), size)
    return gx, 0


@torch.library.register_vmap("torchcorr::corr2d_weight_grad")
def _weight_grad_vmap(info, in_dims, gy, x, weight_size, stride, padding, dilation, groups):
    size = info.batch_size
    gw = ops.corr2d_weight_grad(_images_folded(_leading(gy, in_dims[0], size)),
                                _images_folded(_leading(x, in_dims[1], size)), weight_size, stride, padding, dilation,
                                groups * size)
    return gw.unflatten(0, (size, -1)), 0


@torch.library.register_vmap("torchcorr::corr2d_bias_grad")
def _bias_grad_vmap(info, in_dims, gy):
    size = info.batch_size
    return ops.corr2d_bias_grad(_images_folded(_leading(gy, in_dims[0], size))).unflatten(0, (size, -1)), 0
