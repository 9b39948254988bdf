"""Fake kernels and autograd for the three native ops, torch.ops.torchcorr.*.

Each op is linear in each tensor argument, and the derivatives of each are the other two:

    op                                  d/d(first tensor) of <g, op>        d/d(second tensor) of <g, op>
    y  = forward(x, w) + b              gx = input_grad(gy, w)              gw = weight_grad(gy, x), gb = sum gy
    gx = input_grad(gy, w)              g_gy = forward(ggx, w)              g_w = weight_grad(gy, ggx)
    gw = weight_grad(gy, x)             g_gy = forward(x, ggw)              g_x = input_grad(gy, ggw)

so gradients of any order come from the same three kernels. The bias gradient, gb = bias_grad(gy), is a
sum over batch and pixels (ours: in a fixed order, unlike torch's); its derivative broadcasts g back.
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


def _save(ctx, first, second, config):
    ctx.save_for_backward(first, second)
    ctx.config = config  # (stride, padding, dilation, groups)


def _forward_setup(ctx, inputs, output):
    input, weight, bias, *config = inputs
    _save(ctx, input, weight, config)
    ctx.has_bias = bias is not None


def _forward_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = ops.corr2d_input_grad(grad, weight, input.shape[2:], *ctx.config) if need_input else None
    grad_weight = ops.corr2d_weight_grad(grad, input, weight.shape[2:], *ctx.config) if need_weight else None
    grad_bias = ops.corr2d_bias_grad(grad) if ctx.has_bias and need_bias else None
    return grad_input, grad_weight, grad_bias, None, None, None, None


def _input_grad_setup(ctx, inputs, output):
    grad_output, weight, _input_size, *config = inputs
    _save(ctx, grad_output, weight, config)


def _input_grad_backward(ctx, grad):
    grad_output, weight = ctx.saved_tensors
    need_grad_output, need_weight = ctx.needs_input_grad[:2]
    d_grad_output = ops.corr2d_forward(grad, weight, None, *ctx.config) if need_grad_output else None
    d_weight = ops.corr2d_weight_grad(grad_output, grad, weight.shape[2:], *ctx.config) if need_weight else None
    return d_grad_output, d_weight, None, None, None, None, None


def _weight_grad_setup(ctx, inputs, output):
    grad_output, input, _weight_size, *config = inputs
    _save(ctx, grad_output, input, config)


def _weight_grad_backward(ctx, grad):
    grad_output, input = ctx.saved_tensors
    need_grad_output, need_input = ctx.needs_input_grad[:2]
    d_grad_output = ops.corr2d_forward(input, grad, None, *ctx.config) if need_grad_output else None
    d_input = ops.corr2d_input_grad(grad_output, grad, input.shape[2:], *ctx.config) if need_input else None
    return d_grad_output, d_input, None, None, None, None, None


def _bias_grad_setup(ctx, inputs, output):
    ctx.grad_output_shape = inputs[0].shape


def _bias_grad_backward(ctx, grad):
    return grad.reshape(1, -1, 1, 1).expand(ctx.grad_output_shape)


torch.library.register_autograd("torchcorr::corr2d_forward", _forward_backward, setup_context=_forward_setup)
torch.library.register_autograd("torchcorr::corr2d_input_grad", _input_grad_backward,
                                setup_context=_input_grad_setup)
torch.library.register_autograd("torchcorr::corr2d_weight_grad", _weight_grad_backward,
                                setup_context=_weight_grad_setup)
torch.library.register_autograd("torchcorr::corr2d_bias_grad", _bias_grad_backward, setup_context=_bias_grad_setup)
