"""torchcorr.corr2d / conv2d against F.conv2d: forward and every gradient, over random problems."""

import pytest
import torch
import torch.nn.functional as F

import torchcorr
from torchcorr import reference

from conftest import Problem, assert_matches, oracle, random_problem

SEEDS = range(150)


def gradients(fn, x, w, b, grad_output, **config):
    """(y, gx, gw, gb) of fn, with the gradients of <y, grad_output>."""
    leaves = [t.detach().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    y = fn(*leaves[:2], leaves[2] if b is not None else None, **config)
    return (y, *torch.autograd.grad(y, leaves, grad_output.to(y.dtype)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_conv2d_with_gradients(seed, dtype):
    problem = random_problem(seed)
    generator = torch.Generator().manual_seed(seed)
    x, w, b = problem.tensors(dtype, generator=generator)
    y_ref = oracle(x, w, b, **problem.config())
    grad_output = torch.randn(y_ref.shape, dtype=torch.float64, generator=generator)
    expected = gradients(oracle, x.double(), w.double(), None if b is None else b.double(), grad_output,
                         **problem.config())
    actual = gradients(torchcorr.corr2d, x, w, b, grad_output, **problem.config())
    for got, want in zip(actual, expected):
        assert got.dtype == dtype
        assert_matches(got, want, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("seed", range(0, 150, 5))
def test_half_precision_accumulates_in_float(seed, dtype):
    problem = random_problem(seed)
    generator = torch.Generator().manual_seed(seed)
    x, w, b = problem.tensors(dtype, generator=generator)
    y_ref = oracle(x, w, b, **problem.config())
    grad_output = torch.randn(y_ref.shape, dtype=torch.float64, generator=generator).to(dtype)
    # The oracle sees exactly the rounded operands, so only accumulation and the final rounding differ.
    expected = gradients(oracle, x.double(), w.double(), None if b is None else b.double(),
                         grad_output.double(), **problem.config())
    actual = gradients(torchcorr.corr2d, x, w, b, grad_output, **problem.config())
    for got, want in zip(actual, expected):
        assert got.dtype == dtype
        assert_matches(got, want, dtype)


@pytest.mark.parametrize("seed", range(0, 150, 3))
def test_reference_matches_conv2d(seed):
    problem = random_problem(seed)
    generator = torch.Generator().manual_seed(seed)
    x, w, b = problem.tensors(torch.float64, generator=generator)
    grad_output = torch.randn(oracle(x, w, b, **problem.config()).shape, dtype=torch.float64, generator=generator)
    expected = gradients(oracle, x, w, b, grad_output, **problem.config())
    actual = gradients(reference.corr2d, x, w, b, grad_output, **problem.config())
    for got, want in zip(actual, expected):
        assert_matches(got, want, torch.float64)


def test_long_accumulations_stay_accurate_in_float32(generator):
    """3x3 over 256 channels: 2304 terms a sum."""
    x = torch.randn(2, 256, 12, 12, generator=generator)
    w = torch.randn(8, 256, 3, 3, generator=generator)
    got = torchcorr.corr2d(x, w, padding=1)
    want = oracle(x, w, None, padding=1)
    assert ((got.double() - want).norm() / want.norm()).item() < 1e-6


# Layouts: torchcorr must read any strides correctly and leave its inputs untouched.

def layouts(x, w):
    yield "contiguous", x, w
    yield "channels_last", x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    wide_x = torch.cat([x, x], dim=3)[..., ::2]  # every other column of a wider tensor
    yield "strided", wide_x, w.transpose(2, 3).contiguous().transpose(2, 3)
    yield "transposed", x.transpose(2, 3).contiguous().transpose(2, 3), w.flip(0).flip(0)
    yield "expanded", x[:1].expand_as(x), w


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed", "expanded"])
def test_any_input_strides(layout, generator):
    x = torch.randn(3, 4, 9, 11, dtype=torch.float64, generator=generator)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=generator)
    b = torch.randn(6, dtype=torch.float64, generator=generator)
    _, x_view, w_view = next(item for item in layouts(x, w) if item[0] == layout)
    config = dict(stride=(2, 1), padding=1, groups=2)
    grad_output = torch.randn(oracle(x_view, w_view, b, **config).shape, dtype=torch.float64, generator=generator)
    before = (x_view.clone(), w_view.clone(), b.clone())
    actual = gradients(torchcorr.corr2d, x_view, w_view, b, grad_output, **config)
    expected = gradients(oracle, x_view, w_view, b, grad_output, **config)
    for got, want in zip(actual, expected):
        assert_matches(got, want, torch.float64)
    for after, original in zip((x_view, w_view, b), before):
        assert torch.equal(after, original)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided", "transposed", "expanded"])
def test_result_layout_follows_torch(layout, generator):
    x = torch.randn(3, 4, 9, 11, generator=generator)
    w = torch.randn(6, 2, 3, 2, generator=generator)
    _, x_view, w_view = next(item for item in layouts(x, w) if item[0] == layout)
    got, want = torchcorr.corr2d(x_view, w_view, groups=2), F.conv2d(x_view, w_view, groups=2)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        assert got.is_contiguous(memory_format=memory_format) == want.is_contiguous(memory_format=memory_format)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 2), (3, 4), (4, 5), (5, 3)])
@pytest.mark.parametrize("dilation", [1, (2, 3)])
def test_string_padding(padding, kernel, dilation, generator):
    x = torch.randn(2, 3, 13, 14, dtype=torch.float64, generator=generator)
    w = torch.randn(4, 3, *kernel, dtype=torch.float64, generator=generator)
    grad_output = torch.randn(F.conv2d(x, w, padding=padding, dilation=dilation).shape, dtype=torch.float64,
                              generator=generator)
    actual = gradients(torchcorr.corr2d, x, w, None, grad_output, padding=padding, dilation=dilation)
    expected = gradients(F.conv2d, x, w, None, grad_output, padding=padding, dilation=dilation)
    if padding == "same":
        assert actual[0].shape == x.shape[:1] + (4,) + x.shape[2:]
    for got, want in zip(actual, expected):
        assert_matches(got, want, torch.float64)


def test_unbatched_input_gives_unbatched_output(generator):
    x = torch.randn(3, 10, 12, dtype=torch.float64, generator=generator)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(5, dtype=torch.float64, generator=generator)
    got = torchcorr.corr2d(x, w, b, padding=1)
    assert got.shape == (5, 10, 12)
    assert_matches(got, F.conv2d(x, w, b, padding=1), torch.float64)


def test_d2l_form_with_bias(generator):
    x = torch.randn(7, 9, dtype=torch.float64, generator=generator)
    k = torch.randn(2, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(1, dtype=torch.float64, generator=generator)
    got = torchcorr.corr2d(x, k, b, padding=(1, 0))
    assert got.shape == (8, 7)
    assert_matches(got, F.conv2d(x[None, None], k[None, None], b, padding=(1, 0))[0, 0], torch.float64)


@pytest.mark.parametrize("groups", [1, 2])
def test_empty_batch(groups):
    x = torch.randn(0, 4, 8, 8, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    y = torchcorr.corr2d(x, w, b, groups=groups)
    assert y.shape == (0, 6, 6, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))


def test_conv2d_is_flipped_correlation(generator):
    problem = Problem(2, 4, 11, 10, 6, 3, 4, (2, 1), (1, 2), (1, 2), 2, True)
    x, w, b = problem.tensors(generator=generator)
    assert_matches(torchcorr.conv2d(x, w, b, **problem.config()),
                   F.conv2d(x, w.flip(2, 3), b, **problem.config()), torch.float64)
    assert_matches(reference.conv2d(x, w, b, **problem.config()),
                   F.conv2d(x, w.flip(2, 3), b, **problem.config()), torch.float64)


# Determinism: the same inputs give the same bits, whatever the thread count.

def all_results(x, w, b, grad_output, config):
    return gradients(torchcorr.corr2d, x, w, b, grad_output, **config)


@pytest.mark.parametrize("shape", [
    (4, 8, 30, 31, 8, 3, 1),     # dense
    (2, 16, 20, 21, 80, 3, 1),   # dense 3x3: Winograd (csrc/cpu/algorithm.h), the weight gradient too
    (4, 24, 30, 30, 140, 3, 1),  # Winograd with tile blocks the thread count cuts, two output-channel blocks
    (1, 1, 200, 190, 1, 5, 1),   # one big single-channel image: the weight gradient is one long sum
    (8, 6, 20, 20, 6, 3, 6),     # depthwise
    (2, 20, 60, 50, 20, 3, 20),  # depthwise, in channels_last a band of rows at a time
    (3, 40, 9, 9, 40, 7, 40),    # depthwise on a small plane: channels across the lanes
    (4, 32, 9, 9, 48, 3, 1),     # a small plane: the weight gradient is a GEMM (csrc/cpu/algorithm.h)
    (4, 40, 9, 11, 56, 1, 1),    # 1x1: every op is a GEMM
    (3, 20, 64, 60, 24, 1, 1),   # 1x1 with few outputs: the weight gradient's sum split into slots
    (2, 3, 40, 40, 32, 7, 1),    # a stem: the weight gradient as pixel sums
])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_deterministic_across_runs_and_thread_counts(shape, memory_format, generator):
    N, C, H, W, K, R, groups = shape
    x = torch.randn(N, C, H, W, generator=generator).contiguous(memory_format=memory_format)
    w = torch.randn(K, C // groups, R, R, generator=generator)
    b = torch.randn(K, generator=generator)
    config = dict(padding=R // 2, groups=groups)
    grad_output = torch.randn(F.conv2d(x, w, b, **config).shape, generator=generator)
    grad_output = grad_output.contiguous(memory_format=memory_format)
    threads = torch.get_num_threads()
    try:
        first = all_results(x, w, b, grad_output, config)
        again = all_results(x, w, b, grad_output, config)
        torch.set_num_threads(1)
        single = all_results(x, w, b, grad_output, config)
    finally:
        torch.set_num_threads(threads)
    for a, b_, c in zip(first, again, single):
        assert torch.equal(a, b_) and torch.equal(a, c)


def test_reference_never_calls_torch_convolution(monkeypatch, generator):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch convolution called")

    for name in ("conv2d", "conv1d", "conv3d", "conv_transpose2d"):
        monkeypatch.setattr(F, name, forbidden)
    monkeypatch.setattr(torch, "conv2d", forbidden)
    monkeypatch.setattr(torch, "convolution", forbidden)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    for fn in (reference.corr2d, torchcorr.corr2d):
        fn(x, w, stride=2, padding="valid", groups=2).sum().backward()
        fn(x, w, padding="same", dilation=2, groups=2).sum().backward()


@pytest.mark.parametrize("fn", [torchcorr.corr2d, reference.corr2d], ids=["native", "reference"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_runs_in_low_precision_like_conv2d(fn, dtype, generator):
    x = torch.randn(2, 3, 10, 11, generator=generator)
    w = torch.randn(4, 3, 3, 3, generator=generator, requires_grad=True)
    b = torch.randn(4, generator=generator, requires_grad=True)
    with torch.autocast("cpu", dtype=dtype):
        got = fn(x, w, b, padding=1)
        want = F.conv2d(x, w, b, padding=1)
    assert got.dtype == want.dtype == dtype
    assert_matches(got, oracle(x.to(dtype), w.to(dtype), b.to(dtype), padding=1), dtype)
    got.float().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32


def test_autocast_takes_mixed_dtypes_like_conv2d(generator):
    """A bfloat16 model fed float32 data: autocast casts both, F.conv2d does not complain."""
    conv = torch.nn.Conv2d(3, 4, 3).bfloat16()
    corr = torchcorr.convert(conv)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = corr(x), conv(x)
    assert got.dtype == want.dtype == torch.bfloat16
    assert_matches(got, oracle(x.bfloat16(), conv.weight, conv.bias), torch.bfloat16)


def test_reference_accumulates_half_precision_in_float(generator):
    x = torch.randn(1, 512, 6, 6, generator=generator).bfloat16()
    w = torch.randn(2, 512, 3, 3, generator=generator).bfloat16()
    want = oracle(x, w, None)
    for fn in (reference.corr2d, torchcorr.corr2d):
        got = fn(x, w)
        # float32 sums rounded once: within a bfloat16 rounding (2^-8) of the exact result
        assert ((got.double() - want).norm() / want.norm()).item() < 2.5e-3


def test_huge_stride_reads_only_the_first_pixel(generator):
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, generator=generator)
    w = torch.randn(1, 1, 2, 2, dtype=torch.float64, generator=generator)
    grad_output = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    actual = gradients(torchcorr.corr2d, x, w, None, grad_output, stride=2**63 - 1)
    expected = gradients(F.conv2d, x, w, None, grad_output, stride=2**63 - 1)
    for got, want in zip(actual, expected):
        assert_matches(got, want, torch.float64)


def test_numpy_and_list_arguments(generator):
    np = pytest.importorskip("numpy")
    x = torch.randn(1, 4, 9, 8, dtype=torch.float64, generator=generator)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, generator=generator)
    got = torchcorr.corr2d(x, w, stride=np.int64(2), padding=[np.int32(1), 2], dilation=torch.Size([1, 2]),
                           groups=np.int64(2))
    assert_matches(got, F.conv2d(x, w, stride=2, padding=(1, 2), dilation=(1, 2), groups=2), torch.float64)
    # F.conv2d also takes one-element sequences and integer scalar tensors
    got = torchcorr.corr2d(x, w, stride=[2], padding=(1,), dilation=torch.tensor(2), groups=2)
    assert_matches(got, F.conv2d(x, w, stride=2, padding=1, dilation=2, groups=2), torch.float64)


@pytest.mark.skipif(not torchcorr.native_available("cpu"), reason="the direct call is the native op's")
def test_plain_calls_go_straight_to_the_op(monkeypatch, generator):
    """4-D tensors with int or pair arguments reach the op without Python's argument parsing (the op checks
    them); the other forms, and every bad call, still go through it."""
    from torchcorr import functional
    parsed = []

    def counting_parse(*args, **kwargs):
        parsed.append(args[0])
        return parse(*args, **kwargs)

    parse = functional.parse
    monkeypatch.setattr(functional, "parse", counting_parse)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64, generator=generator)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=generator)
    b = torch.randn(6, dtype=torch.float64, generator=generator)
    got = torchcorr.corr2d(x, w, b, (2, 1), 1, (1, 2), 2)
    assert_matches(got, F.conv2d(x, w, b, (2, 1), 1, (1, 2), 2), torch.float64)
    assert parsed == []
    torchcorr.corr2d(x, w, b, padding="same", groups=2)  # string padding: parsed
    torchcorr.corr2d(x[0], w, b, groups=2)  # unbatched: parsed
    with pytest.raises(TypeError, match="stride must be an int or a pair"):
        torchcorr.corr2d(x, w, b, stride=True, groups=2)  # the op would take a bool; parse refuses it
    with pytest.raises(ValueError, match="input channels"):
        torchcorr.corr2d(x, w, b, groups=1)  # the op's error, named in corr2d's words
    assert len(parsed) == 4
