"""torchcorr: hand-written 2-D cross-correlation kernels for PyTorch.

    torchcorr.corr2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1)
    torchcorr.conv2d(...)              strict convolution (kernel flipped)
    torchcorr.nn.Corr2d(...)           drop-in nn.Conv2d;  torchcorr.nn.Conv2D(kernel_size): the D2L layer
    torchcorr.convert(model)           every nn.Conv2d of a model replaced by a Corr2d
    torchcorr.reference                the same functions in plain tensor ops
    torchcorr.native_available(device), torchcorr.build_info()
    torchcorr.backends.cpu.gemm        switch for the CPU's 1x1 matrix-product path
"""

from . import _native
from ._native import build_info, native_available

if _native.library is not None:
    from . import _ops  # noqa: F401  (fake kernels and autograd of torch.ops.torchcorr.*)

from . import backends, nn, reference
from .functional import conv2d, corr2d
from .nn import convert

__all__ = ["corr2d", "conv2d", "convert", "nn", "reference", "backends", "native_available", "build_info"]
__version__ = "0.1.0"
