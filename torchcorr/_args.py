"""Argument normalisation shared by the native path and the reference.

Both accept what F.conv2d accepts (4-D NCHW or 3-D unbatched input, int or pair stride/padding/dilation,
padding='same'/'valid', groups, bias) plus the D2L form, a 2-D image with a 2-D kernel. `parse` turns
all of that into one 4-D problem (in the autocast dtype inside torch.autocast, as F.conv2d does). What only
Python can judge is judged here (Python values that are not tensors or ints, or out of range, the 2-D and 3-D
forms, padding strings); everything about the tensors themselves (dtypes, devices, channels, groups, sizes,
bias) is checked once, by the forward op's own checks in C++ (csrc/corr2d.cpp), under the public function's
name. Without the native library the reference computes with what torch's own operators accept: a tensor that
does not fit raises their errors.
"""

import operator
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _native


class Corr2dArgs(NamedTuple):
    input: Tensor  # N x C x H x W (already padded on the right/bottom for an even 'same' kernel)
    weight: Tensor  # K x C/groups x R x S
    bias: Optional[Tensor]
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    input_rank: int  # 4 (batched), 3 (unbatched) or 2 (the D2L form): the rank of the result


def output_size(height, width, kernel_h, kernel_w, stride, padding, dilation):
    """Output (rows, columns) of a correlation; works on SymInts too."""
    rows = (height + 2 * padding[0] - dilation[0] * (kernel_h - 1) - 1) // stride[0] + 1
    cols = (width + 2 * padding[1] - dilation[1] * (kernel_w - 1) - 1) // stride[1] + 1
    return rows, cols


def flip_kernel(weight):
    """The kernel of a strict convolution, as a correlation sees it: flipped in both spatial dims."""
    if isinstance(weight, Tensor) and weight.dim() >= 2:
        return weight.flip(-2, -1)
    return weight  # not a kernel: parse() will say what is wrong with it


def restore_rank(output: Tensor, input_rank: int) -> Tensor:
    """Undo the batching of a 3-D or 2-D input on the 4-D result."""
    if input_rank == 4:
        return output
    return output.reshape(output.shape[4 - input_rank:])


def _as_int(value):
    """value as an int (a SymInt stays one): Python, NumPy and one-element integer tensors; else None."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, (bool, tuple, list, str)) or value is None:
        return None  # without the exception below, which Dynamo in torch 2.11 cannot trace
    try:
        return operator.index(value)
    except TypeError:
        return None


def _pair(op, name, value, minimum):
    """An int, or a sequence of one or two ints, as F.conv2d takes them -> a pair of ints, at least `minimum` (the
    reference, which runs without the native library too, must never compute with a negative padding or a zero
    dilation)."""
    if type(value) is int and value >= minimum:  # the common case, kept cheap for small problems
        return value, value
    pair = [value] if _as_int(value) is not None else value
    if isinstance(pair, (tuple, list, torch.Size)) and len(pair) in (1, 2):
        pair = [_as_int(v) for v in pair] * (3 - len(pair))
    if not isinstance(pair, list) or any(v is None for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if pair[0] < minimum or pair[1] < minimum:
        kind = "non-negative" if minimum == 0 else "positive"
        raise ValueError(f"{op}: {name} must be {kind}, got {value!r}")
    return tuple(pair)


def _check_is_tensor(op, name, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")


def _autocast_device_types():
    """Device types that have an autocast mode, asked once at import: Dynamo in torch 2.11 cannot trace
    torch.amp.is_autocast_available, and torch.is_autocast_enabled raises for the others (meta)."""
    candidates = ("cpu", "cuda", "xpu", "mps", "hpu", "mtia", torch._C._get_privateuse1_backend_name())
    return frozenset(t for t in candidates if torch.amp.is_autocast_available(t))


AUTOCAST_DEVICE_TYPES = _autocast_device_types()


def _autocast(input, weight, bias):
    """Inside torch.autocast, the operands go to the autocast dtype, as F.conv2d's do.

    Here, before the dtypes are compared, so that mixed dtypes pass as they do for F.conv2d, and so that
    the reference gets it too; the forward op's own autocast rule (csrc/autocast/) serves torch.ops calls.
    """
    if not torch._C._is_any_autocast_enabled():  # the common case, a tenth of the device-type test
        return input, weight, bias
    device_type = input.device.type
    if not (device_type in AUTOCAST_DEVICE_TYPES and torch.is_autocast_enabled(device_type)):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t):  # floating-point tensors only, as autocast casts them; the op refuses the others
        return t.to(dtype) if t is not None and t.is_floating_point() else t

    return cast(input), cast(weight), cast(bias)


def _batch(op, input, weight, bias):
    """Bring input and weight to 4-D; returns (input, weight, rank of the original input)."""
    rank = input.dim()
    if rank == 2:
        if weight.dim() != 2:
            raise ValueError(f"{op}: a 2-D input (H, W) takes a 2-D kernel (kh, kw), got a weight of "
                             f"shape {tuple(weight.shape)}")
        if bias is not None and bias.shape != (1,):
            raise ValueError(f"{op}: a 2-D input takes a bias of shape (1,), got {tuple(bias.shape)}")
        return input[None, None], weight[None, None], rank
    if rank not in (3, 4):
        raise ValueError(f"{op}: expected a 4-D (N, C, H, W), 3-D (C, H, W) or 2-D (H, W) input, got "
                         f"shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{op}: expected a 4-D weight (out_channels, in_channels/groups, kh, kw) for a "
                         f"{rank}-D input, got shape {tuple(weight.shape)}")
    return (input if rank == 4 else input[None]), weight, rank


def _same_padding(op, input, weight, stride, dilation):
    """padding='same' as torch does it: half on each side, the odd extra pixel on the right/bottom."""
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' is not supported for strided correlations "
                         f"(stride={stride})")
    totals = [dilation[i] * (weight.shape[2 + i] - 1) for i in range(2)]
    padding = (totals[0] // 2, totals[1] // 2)
    extra_h, extra_w = totals[0] - 2 * padding[0], totals[1] - 2 * padding[1]
    if extra_h or extra_w:
        input = F.pad(input, (0, extra_w, 0, extra_h))
    return input, padding


def parse(op, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Corr2dArgs:
    _check_is_tensor(op, "input", input)
    _check_is_tensor(op, "weight", weight)
    if bias is not None:
        _check_is_tensor(op, "bias", bias)
    input, weight, bias = _autocast(input, weight, bias)
    input, weight, rank = _batch(op, input, weight, bias)
    stride = _pair(op, "stride", stride, 1)
    dilation = _pair(op, "dilation", dilation, 1)
    if type(groups) is not int:
        groups_int = _as_int(groups)
        if groups_int is None:
            raise TypeError(f"{op}: groups must be an int, got {groups!r}")
        groups = groups_int
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            input, padding = _same_padding(op, input, weight, stride, dilation)
        else:
            raise ValueError(f"{op}: padding must be 'same', 'valid', an int or a pair of ints, got "
                             f"{padding!r}")
    else:
        padding = _pair(op, "padding", padding, 0)
    _native.check_forward(op, input, weight, bias, stride, padding, dilation, groups)
    return Corr2dArgs(input, weight, bias, stride, padding, dilation, groups, rank)
