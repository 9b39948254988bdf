"""Output size and forward FLOPs of a benchmark shape, shared by bench_cpu.py and bench_gpu.py.

A shape has n, c_in, h, w, c_out, kernel (kh, kw), stride, padding, groups, and optionally dilation;
stride, padding and dilation are ints or pairs.
"""

from torch.nn.modules.utils import _pair


def output_size(shape):
    kh, kw = shape.kernel
    (sh, sw), (ph, pw) = _pair(shape.stride), _pair(shape.padding)
    dh, dw = _pair(getattr(shape, "dilation", 1))
    p = (shape.h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    q = (shape.w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return p, q


def forward_gflop(shape):
    """Multiply-adds of the forward, counted as 2 FLOP each: 2*N*C_out*P*Q*(C_in/groups)*kh*kw."""
    p, q = output_size(shape)
    kh, kw = shape.kernel
    return 2 * shape.n * shape.c_out * p * q * (shape.c_in // shape.groups) * kh * kw / 1e9
