"""Property-based tests (hypothesis) over shapes with zero and one in every dimension, strides, paddings,
dilations, groups, dtypes and layouts: forward and every gradient equal F.conv2d, or both refuse the input.

Where F.conv2d refuses a problem whose answer is well defined (zero output channels, an empty plane made
real by padding), torchcorr returns that answer, checked against the pure-PyTorch reference; with zero input
channels torch returns a (N, 0, P, Q) result and torchcorr the mathematically right (N, K, P, Q) one, every
output the bias. `make test` runs a fixed set of examples; `make fuzz` searches much longer.
"""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, strategies as st

import torchcorr
from torchcorr import reference

from conftest import assert_matches

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided_view", "expanded"]
REFUSED = (ValueError, TypeError, RuntimeError)


@st.composite
def problems(draw):
    """Sizes from 0 up; the planes mostly just large enough for the kernel, so that most problems are valid."""
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    pair = lambda *values: (draw(st.sampled_from(values)), draw(st.sampled_from(values)))  # noqa: E731
    kernel, stride, dilation = pair(0, 1, 1, 2, 3, 3, 4), pair(1, 1, 1, 2, 3, 4), pair(1, 1, 2, 3)
    padding = draw(st.sampled_from(["same", "valid", None, None, None, None]))
    padding = padding or pair(0, 1, 2, 3)
    plane = []
    for i in range(2):
        span = dilation[i] * (max(kernel[i], 1) - 1) + 1
        pad = padding[i] if isinstance(padding, tuple) else 0 if padding == "valid" else (span - 1) // 2
        plane.append(max(0, span - 2 * pad + draw(st.integers(-2, 6))))
    sizes = dict(N=draw(st.integers(0, 3)), C=groups * draw(st.integers(0, 3)), H=plane[0], W=plane[1],
                 K=groups * draw(st.integers(0, 3)), R=kernel[0], S=kernel[1])
    config = dict(stride=stride, dilation=dilation, groups=groups, padding=padding)
    return sizes, config, draw(st.booleans()), draw(st.sampled_from(DTYPES)), draw(st.sampled_from(LAYOUTS)), \
        draw(st.integers(0, 2**31))


def make_input(shape, layout, dtype, generator):
    """A tensor of `shape` with the given memory layout: every way a real caller's tensor may look."""
    if layout == "strided_view":  # every other column of a wider tensor
        wide = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=torch.float64, generator=generator)
        return wide[..., 1::2].to(dtype) if dtype == torch.float64 else wide.to(dtype)[..., 1::2]
    if layout == "expanded":  # stride 0 along the batch
        return torch.randn(1, *shape[1:], dtype=torch.float64, generator=generator).to(dtype).expand(shape)
    tensor = torch.randn(shape, dtype=torch.float64, generator=generator).to(dtype)
    return tensor.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else tensor


def forward_and_gradients(fn, x, w, b, grad_output, config):
    leaves = [t.detach().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    y = fn(*leaves[:2], leaves[2] if b is not None else None, **config)
    if grad_output is None:
        return (y,)
    return (y, *torch.autograd.grad(y, leaves, grad_output.to(y.dtype), allow_unused=True))


def expected_results(x, w, b, config, generator):
    """F.conv2d in float64 on the same (rounded) values; the reference where torch refuses a defined answer."""
    x64, w64, b64 = x.double(), w.double(), None if b is None else b.double()
    try:
        y = F.conv2d(x64, w64, b64, **config)
    except Exception:  # noqa: BLE001 (torch refuses some inputs with an IndexError)
        y = None
    if y is None or (x.shape[1] == 0 and w.shape[0] > 0):  # torch: an error, or its (N, 0, P, Q) result
        try:
            y = reference.corr2d(x64, w64, b64, **config)
        except REFUSED:
            return None, None
        fn = reference.corr2d
    else:
        fn = F.conv2d
    # rounded to the operands' dtype, so that the oracle sees exactly the output gradient torchcorr gets
    grad_output = torch.randn(y.shape, dtype=torch.float64, generator=generator).to(x.dtype).double()
    return forward_and_gradients(fn, x64, w64, b64, grad_output, config), grad_output


@given(problems())
def test_forward_and_gradients_match_conv2d_or_both_refuse(problem):
    sizes, config, with_bias, dtype, layout, seed = problem
    generator = torch.Generator().manual_seed(seed)
    x = make_input((sizes["N"], sizes["C"], sizes["H"], sizes["W"]), layout, dtype, generator)
    w = torch.randn(sizes["K"], sizes["C"] // config["groups"], sizes["R"], sizes["S"], dtype=torch.float64,
                    generator=generator).to(dtype)
    b = torch.randn(sizes["K"], dtype=torch.float64, generator=generator).to(dtype) if with_bias else None
    originals = [t.clone() for t in (x, w, b) if t is not None]

    expected, grad_output = expected_results(x, w, b, config, generator)
    event("refused by both" if expected is None else "computed")
    if expected is None:
        with pytest.raises(REFUSED, match="torchcorr"):
            torchcorr.corr2d(x, w, b, **config)
        return
    actual = forward_and_gradients(torchcorr.corr2d, x, w, b, grad_output, config)
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got.shape == want.shape and got.dtype == dtype
        if want.numel():
            assert_matches(got, want, dtype)
    for before, after in zip(originals, (t for t in (x, w, b) if t is not None)):
        assert torch.equal(before, after)  # inputs are never modified
