"""Modules: Corr2d, a drop-in nn.Conv2d running torchcorr's kernels, and Conv2D, the D2L layer."""

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import corr2d


class Corr2d(nn.Conv2d):
    """nn.Conv2d whose forward runs torchcorr.corr2d.

    It *is* an nn.Conv2d (same constructor, validation, initialisation, state_dict, repr and
    isinstance checks), so it drops into existing code, including code that initialises every
    nn.Conv2d of a model; only the computation is torchcorr's.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias) -> Tensor:
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return corr2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return corr2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2D(nn.Module):
    """The D2L chapter's layer: a 2-D image correlated with one learned kernel, plus a scalar bias."""

    def __init__(self, kernel_size):
        super().__init__()
        shape = (kernel_size, kernel_size) if isinstance(kernel_size, numbers.Integral) else tuple(kernel_size)
        self.weight = nn.Parameter(torch.rand(shape))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return corr2d(x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"kernel_size={tuple(self.weight.shape)}"


def convert(module: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every nn.Conv2d in module by an equivalent Corr2d carrying the same weights.

    Corr2d adds no state to nn.Conv2d, so each nn.Conv2d simply becomes a Corr2d: its parameters,
    buffers, hooks (spectral_norm's too) and attributes stay as they are. Without inplace the model is
    deep-copied first and the original is left untouched. Subclasses of nn.Conv2d (Corr2d itself,
    parametrized or user-defined convolutions) are left alone, since their forward may differ.
    """
    if not inplace:
        module = copy.deepcopy(module)
    for submodule in module.modules():
        if type(submodule) is nn.Conv2d:
            submodule.__class__ = Corr2d
    return module
