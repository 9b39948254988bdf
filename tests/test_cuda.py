"""torchcorr's CUDA kernels: parity with F.conv2d in four dtypes, gradients, layouts, streams, autocast,
determinism, torch.compile, devices, empty batches and an image of more than 2^31 elements.

The oracle is F.conv2d in float64 on the CPU (conftest.oracle), so cuDNN is never the reference.
"""

import pytest
import torch
import torch.nn.functional as F

import torchcorr

from conftest import Problem, assert_matches, oracle, random_problem
from test_compile import SmallNet, loss_and_grads

if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)

DEVICE = torch.device("cuda")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
ops = torch.ops.torchcorr


def gradients(fn, x, w, b, grad_output, **config):
    """(y, gx, gw, gb) of fn, with the gradients of <y, grad_output>; gb only with a bias."""
    leaves = [t.detach().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    y = fn(*leaves[:2], leaves[2] if b is not None else None, **config)
    return (y, *torch.autograd.grad(y, leaves, grad_output.to(y.dtype)))


def on_device(*tensors):
    return [None if t is None else t.to(DEVICE) for t in tensors]


def check_against_oracle(problem, dtype, seed):
    """torchcorr on the GPU against the float64 oracle on the CPU, forward and every gradient."""
    generator = torch.Generator().manual_seed(seed)
    x, w, b = problem.tensors(dtype, generator=generator)
    y_shape = oracle(x, w, b, **problem.config()).shape
    grad_output = torch.randn(y_shape, dtype=torch.float64, generator=generator).to(dtype)
    # The oracle sees exactly the rounded operands: only accumulation and the final rounding differ.
    expected = gradients(oracle, x.double(), w.double(), None if b is None else b.double(), grad_output.double(),
                         **problem.config())
    actual = gradients(torchcorr.corr2d, *on_device(x, w, b), grad_output.to(DEVICE), **problem.config())
    for got, want in zip(actual, expected):
        assert got.device.type == "cuda" and got.dtype == dtype
        assert_matches(got.cpu(), want, dtype)


def test_cuda_kernels_are_built():
    info = torchcorr.build_info()
    assert info["cuda"] is True and info["cuda_archs"], info
    assert torchcorr.native_available("cuda")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", range(50))
def test_matches_conv2d_with_gradients(seed, dtype):
    check_against_oracle(random_problem(seed), dtype, seed)


# Sizes that take the kernels' other paths: weights too large to stage in shared memory, weight and bias
# gradients cut into many chunks, more than 65535 block rows, planes wider than one block.
KERNEL_PATHS = {
    "forward_weights_unstaged": Problem(2, 600, 6, 7, 2, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "input_grad_weights_unstaged": Problem(2, 2, 6, 7, 600, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "many_chunks": Problem(2, 1, 300, 290, 1, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "depthwise_many_images": Problem(300, 256, 2, 2, 256, 1, 1, (1, 1), (0, 0), (1, 1), 256, True),
    "wide_planes_strided_dilated": Problem(2, 3, 70, 300, 4, 3, 5, (2, 3), (2, 1), (3, 2), 1, True),
    "kernel_covers_padding_only": Problem(2, 2, 1, 1, 3, 3, 3, (1, 1), (2, 2), (1, 1), 1, True),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_paths(name, dtype):
    check_against_oracle(KERNEL_PATHS[name], dtype, seed=7)


# Layers with channels enough for the implicit GEMM (csrc/cuda/implicit_gemm.cuh): ragged row and column
# tiles, both tile widths, strided input gradients (exact division), groups, dilation, many weight chunks;
# thin layers on planes of 256+ pixels for the shared-memory tiles (direct_tile.cuh): both tile widths,
# the stride-1 input gradient through flipped weights, and padding beyond the kernel's reach (no flip).
TILED_PATHS = {
    "gemm_ragged_tiles": Problem(3, 40, 9, 11, 70, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "gemm_strided_dilated_grouped": Problem(2, 64, 13, 12, 96, 3, 2, (2, 3), (2, 1), (2, 1), 2, True),
    "gemm_pointwise_many_chunks": Problem(16, 32, 30, 30, 32, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_wide_columns": Problem(2, 130, 5, 6, 140, 2, 2, (1, 1), (0, 1), (1, 1), 1, False),
    # input gradients by stride phase: phases no tap reaches (zeros), a stride above the kernel size
    "gemm_pointwise_stride2": Problem(2, 32, 15, 14, 48, 1, 1, (2, 2), (0, 0), (1, 1), 1, False),
    "gemm_stride_above_kernel": Problem(2, 24, 17, 19, 40, 2, 3, (3, 4), (1, 0), (1, 1), 1, True),
    "tile_single_channel_wide": Problem(2, 1, 40, 70, 1, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "tile_depthwise_k5_strided": Problem(2, 6, 37, 33, 6, 5, 5, (2, 2), (2, 2), (1, 1), 6, True),
    "tile_few_channels_dilated": Problem(3, 4, 30, 29, 6, 3, 2, (1, 1), (0, 1), (2, 1), 2, False),
    "tile_padding_beyond_reach": Problem(2, 2, 20, 20, 3, 3, 3, (1, 1), (3, 3), (1, 1), 1, True),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(TILED_PATHS))
def test_tiled_kernel_paths(name, dtype):
    check_against_oracle(TILED_PATHS[name], dtype, seed=9)


def test_more_than_65535_block_rows():
    """N * K / images-per-block above 65535: the kernels loop over the block rows that do not fit."""
    problem = Problem(300, 2048, 1, 2, 2048, 1, 1, (1, 1), (0, 0), (1, 1), 2048, False)
    check_against_oracle(problem, torch.float32, seed=8)


@pytest.mark.parametrize("seed", range(0, 50, 5))
def test_cpu_and_cuda_agree(seed):
    problem = random_problem(seed)
    generator = torch.Generator().manual_seed(seed)
    x, w, b = problem.tensors(torch.float32, generator=generator)
    grad_output = torch.randn(oracle(x, w, b, **problem.config()).shape, generator=generator)
    on_cpu = gradients(torchcorr.corr2d, x, w, b, grad_output, **problem.config())
    on_gpu = gradients(torchcorr.corr2d, *on_device(x, w, b), grad_output.to(DEVICE), **problem.config())
    for cpu, gpu in zip(on_cpu, on_gpu):
        assert_matches(gpu.cpu(), cpu, torch.float32)


GRADCHECK_PROBLEMS = {
    "plain": Problem(2, 2, 6, 7, 3, 3, 2, (1, 1), (0, 0), (1, 1), 1, True),
    "strided_padded": Problem(1, 3, 7, 8, 2, 3, 3, (2, 3), (1, 2), (1, 1), 1, True),
    "dilated_grouped": Problem(2, 4, 8, 7, 4, 2, 3, (1, 2), (2, 1), (2, 2), 2, False),
    "depthwise": Problem(1, 3, 6, 6, 3, 3, 3, (1, 1), (1, 1), (1, 1), 3, True),
}


@pytest.mark.parametrize("name", list(GRADCHECK_PROBLEMS))
def test_gradcheck_and_gradgradcheck(name):
    problem = GRADCHECK_PROBLEMS[name]
    generator = torch.Generator().manual_seed(1)
    tensors = [t.to(DEVICE).requires_grad_() for t in problem.tensors(generator=generator) if t is not None]

    def corr(x, w, *bias):
        return torchcorr.corr2d(x, w, bias[0] if bias else None, **problem.config())

    assert torch.autograd.gradcheck(corr, tensors)
    assert torch.autograd.gradgradcheck(corr, tensors)


def opcheck_samples():
    generator = torch.Generator().manual_seed(3)
    config = [[2, 1], [1, 0], [1, 2], 2]
    x = torch.randn(2, 4, 7, 9, generator=generator)
    w = torch.randn(6, 2, 3, 2, generator=generator)
    gy = torch.randn(ops.corr2d_forward(x, w, None, *config).shape, generator=generator)
    for layout in (torch.contiguous_format, torch.channels_last):
        x_, w_, gy_ = (t.to(DEVICE).contiguous(memory_format=layout).requires_grad_() for t in (x, w, gy))
        b_ = torch.randn(6, generator=generator).to(DEVICE).requires_grad_()
        name = "channels_last" if layout == torch.channels_last else "contiguous"
        yield f"forward-{name}", ops.corr2d_forward.default, (x_, w_, b_, *config)
        yield f"input_grad-{name}", ops.corr2d_input_grad.default, (gy_, w_, [7, 9], *config)
        yield f"weight_grad-{name}", ops.corr2d_weight_grad.default, (gy_, x_, [3, 2], *config)
        yield f"bias_grad-{name}", ops.corr2d_bias_grad.default, (gy_,)


OPCHECK_SAMPLES = list(opcheck_samples())


@pytest.mark.parametrize("op, args", [s[1:] for s in OPCHECK_SAMPLES], ids=[s[0] for s in OPCHECK_SAMPLES])
def test_opcheck(op, args):
    torch.library.opcheck(op, args)


# Layouts: any strides in, results laid out as torch's conv2d lays them out on CUDA.

def layouts(x, w):
    cl = torch.channels_last
    yield "contiguous", x, w
    yield "channels_last", x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
    yield "channels_last_input", x.contiguous(memory_format=cl), w
    yield "channels_last_weight", x, w.contiguous(memory_format=cl)
    yield "strided", torch.cat([x, x], dim=3)[..., ::2], w.transpose(2, 3).contiguous().transpose(2, 3)
    yield "expanded", x[:1].expand_as(x), w


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channels_last_input", "channels_last_weight",
                                    "strided", "expanded"])
def test_any_input_strides(layout):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(3, 4, 9, 11, dtype=torch.float64, generator=generator)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=generator)
    b = torch.randn(6, dtype=torch.float64, generator=generator)
    config = dict(stride=(2, 1), padding=1, groups=2)
    grad_output = torch.randn(oracle(x, w, b, **config).shape, dtype=torch.float64, generator=generator)
    _, x_view, w_view = next(item for item in layouts(*on_device(x, w)) if item[0] == layout)
    expected = gradients(oracle, x_view.cpu(), w_view.cpu(), b, grad_output, **config)
    before = (x_view.clone(), w_view.clone())
    actual = gradients(torchcorr.corr2d, x_view, w_view, b.to(DEVICE), grad_output.to(DEVICE), **config)
    for got, want in zip(actual, expected):
        assert_matches(got.cpu(), want, torch.float64)
    assert torch.equal(x_view, before[0]) and torch.equal(w_view, before[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "channels_last_input", "channels_last_weight"])
def test_result_layout_follows_torch(layout, dtype):
    """Like cuDNN's conv2d: channels_last when either operand is (torch keeps float64 contiguous on CUDA)."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(3, 4, 9, 11, generator=generator).to(DEVICE, dtype)
    w = torch.randn(6, 2, 3, 2, generator=generator).to(DEVICE, dtype)
    _, x_view, w_view = next(item for item in layouts(x, w) if item[0] == layout)
    got, want = torchcorr.corr2d(x_view, w_view, groups=2), F.conv2d(x_view, w_view, groups=2)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        assert got.is_contiguous(memory_format=memory_format) == want.is_contiguous(memory_format=memory_format)


def test_non_default_stream():
    """Kernels run on the current stream: inputs made on a busy side stream are read only once ready."""
    problem = Problem(2, 4, 30, 31, 6, 3, 3, (1, 2), (1, 1), (1, 1), 2, True)
    generator = torch.Generator().manual_seed(6)
    x, w, b = problem.tensors(torch.float32, generator=generator)
    grad_output = torch.randn(oracle(x, w, b, **problem.config()).shape, generator=generator)
    expected = gradients(oracle, x, w, b, grad_output, **problem.config())
    sources = on_device(x, w, b, grad_output)
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(50_000_000)  # tens of ms: work wrongly put on the default stream would run first
        x_, w_, b_, gy_ = (t * 1 for t in sources)  # written on the side stream, after the sleep
        actual = gradients(torchcorr.corr2d, x_, w_, b_, gy_, **problem.config())
    stream.synchronize()
    for got, want in zip(actual, expected):
        assert_matches(got.cpu(), want, torch.float32)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_runs_on_the_tensors_device_not_the_current_one():
    problem = Problem(2, 3, 12, 13, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, True)
    generator = torch.Generator().manual_seed(9)
    x, w, b = problem.tensors(torch.float32, generator=generator)
    grad_output = torch.randn(oracle(x, w, b, **problem.config()).shape, generator=generator)
    expected = gradients(oracle, x, w, b, grad_output, **problem.config())
    second = torch.device("cuda", 1)
    with torch.cuda.device(0):
        actual = gradients(torchcorr.corr2d, *(t.to(second) for t in (x, w, b, grad_output)), **problem.config())
    for got, want in zip(actual, expected):
        assert got.device == second
        assert_matches(got.cpu(), want, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_autocast_runs_in_low_precision_like_conv2d(dtype):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(DEVICE)
    corr = torchcorr.convert(conv)
    x = torch.randn(2, 3, 10, 11, device=DEVICE)
    with torch.autocast("cuda", dtype=dtype):
        got, want = corr(x), conv(x)
        direct = ops.corr2d_forward(x, conv.weight, conv.bias, [1, 1], [1, 1], [1, 1], 1)  # the C++ autocast rule
    assert got.dtype == want.dtype == direct.dtype == dtype
    expected = oracle(*(t.to(dtype).cpu() for t in (x, conv.weight, conv.bias)), padding=1)
    assert_matches(got.cpu(), expected, dtype)
    assert torch.equal(got, direct)
    got.float().sum().backward()
    assert corr.weight.grad.dtype == corr.bias.grad.dtype == torch.float32


def test_deterministic_mode_gives_identical_bits():
    """No atomics: runs under torch.use_deterministic_algorithms(True), the same bits every time."""
    generator = torch.Generator().manual_seed(10)
    cases = [
        (torch.randn(4, 8, 30, 31, generator=generator), torch.randn(8, 8, 3, 3, generator=generator), 1),
        (torch.randn(1, 1, 300, 290, generator=generator), torch.randn(1, 1, 5, 5, generator=generator), 1),
        (torch.randn(8, 6, 20, 20, generator=generator), torch.randn(6, 1, 3, 3, generator=generator), 6),
    ]
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for x, w, groups in cases:
            x, w, b = on_device(x, w, torch.randn(w.shape[0], generator=generator))
            grad_output = torch.randn(torchcorr.corr2d(x, w, b, padding=1, groups=groups).shape, device=DEVICE)
            first = gradients(torchcorr.corr2d, x, w, b, grad_output, padding=1, groups=groups)
            again = gradients(torchcorr.corr2d, x, w, b, grad_output, padding=1, groups=groups)
            for a, b_ in zip(first, again):
                assert torch.equal(a, b_)
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_forward_and_backward(backend):
    if backend == "inductor":
        pytest.importorskip("triton")
    torch.manual_seed(0)
    model = SmallNet().to(DEVICE, torch.float64)
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, device=DEVICE, requires_grad=True)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    for got, want in zip(loss_and_grads(compiled, x), loss_and_grads(model, x)):
        assert_matches(got.cpu(), want.cpu(), torch.float64)


def test_mixed_devices_give_a_clear_error():
    x, w = torch.randn(1, 2, 5, 5, device=DEVICE), torch.randn(3, 2, 3, 3)
    with pytest.raises(RuntimeError, match="weight is on cpu but input is on cuda"):
        torchcorr.corr2d(x, w)
    with pytest.raises(RuntimeError, match="bias is on cpu but input is on cuda"):
        torchcorr.corr2d(x, w.to(DEVICE), torch.randn(3))
    config = [[1, 1], [0, 0], [1, 1], 1]
    gy = torch.randn(1, 3, 3, 3, device=DEVICE)
    calls = {
        "weight is on cpu but the other operand is on cuda": lambda: ops.corr2d_forward(x, w, None, *config),
        "weight is on cuda:0 but the other operand is on cpu": lambda: ops.corr2d_forward(x.cpu(), w.to(DEVICE),
                                                                                          None, *config),
        "bias is on cpu but the other operand is on cuda": lambda: ops.corr2d_forward(x, w.to(DEVICE), torch.randn(3),
                                                                                      *config),
        "weight is on cpu but the other operand is on cuda:0": lambda: ops.corr2d_input_grad(gy, w, [5, 5], *config),
        "input is on cpu but the other operand is on cuda:0": lambda: ops.corr2d_weight_grad(gy, x.cpu(), [3, 3],
                                                                                             *config),
    }
    for words, call in calls.items():
        with pytest.raises(RuntimeError, match=words):
            call()


@pytest.mark.parametrize("groups", [1, 2])
def test_empty_batch(groups):
    x = torch.randn(0, 4, 8, 8, device=DEVICE, requires_grad=True)
    w = torch.randn(6, 4 // groups, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(6, device=DEVICE, requires_grad=True)
    y = torchcorr.corr2d(x, w, b, groups=groups)
    assert y.shape == (0, 6, 6, 6) and y.device.type == "cuda"
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    assert torch.equal(b.grad, torch.zeros_like(b))


def test_no_output_channels():
    x = torch.randn(2, 4, 8, 8, device=DEVICE, requires_grad=True)
    w = torch.randn(0, 4, 3, 3, device=DEVICE, requires_grad=True)
    y = torchcorr.corr2d(x, w)
    assert y.shape == (2, 0, 6, 6)
    y.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


# An image of more than 2^31 elements: every offset past 2^31 must be computed in 64 bits.

SIDE = 46341  # SIDE * SIDE > 2^31


def window_oracle(image, kernel, rows, cols):
    """F.conv2d(image, kernel, padding=1)[0, 0, rows, cols] for a 3x3 kernel, in float64, from a small window."""
    height, width = image.shape[2:]
    window = image[0, 0, max(rows.start - 1, 0):rows.stop + 1, max(cols.start - 1, 0):cols.stop + 1]
    window = F.pad(window.double().cpu(), (int(cols.start == 0), int(cols.stop == width),
                                           int(rows.start == 0), int(rows.stop == height)))
    return F.conv2d(window[None, None], kernel.double().cpu())[0, 0]


def test_image_of_more_than_2_31_elements():
    needed = 3 * SIDE * SIDE * 2 + (2 << 30)  # image, output and input gradient in float16, and room to spare
    free, _ = torch.cuda.mem_get_info()
    if free < needed:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} GiB are free")
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn(1, 1, SIDE, SIDE, device=DEVICE, dtype=torch.float16, generator=generator)
    w = torch.randn(1, 1, 3, 3, device=DEVICE, dtype=torch.float16, generator=generator)
    config = ([1, 1], [1, 1], [1, 1], 1)
    last_row, col_past_2_31 = divmod(2**31, SIDE)  # the element at offset 2^31 lies in the last row
    assert last_row == SIDE - 1
    windows = [(slice(0, 4), slice(0, 6)), (slice(0, 4), slice(SIDE - 6, SIDE)),
               (slice(23000, 23004), slice(23000, 23008)), (slice(SIDE - 4, SIDE), slice(0, 6)),
               (slice(SIDE - 3, SIDE), slice(col_past_2_31 - 8, col_past_2_31 + 8)),
               (slice(SIDE - 4, SIDE), slice(SIDE - 6, SIDE))]

    y = ops.corr2d_forward(x, w, None, *config)
    assert y.shape == x.shape
    for rows, cols in windows:
        assert_matches(y[0, 0, rows, cols].cpu(), window_oracle(x, w, rows, cols), torch.float16)

    gx = ops.corr2d_input_grad(y, w, [SIDE, SIDE], *config)  # with stride 1: the correlation of y with w flipped
    for rows, cols in windows:
        assert_matches(gx[0, 0, rows, cols].cpu(), window_oracle(y, w.flip(2, 3), rows, cols), torch.float16)
    del gx

    # Weight and bias gradients of an output gradient that is zero but at a few points, corners and past 2^31.
    points = [(0, 0), (0, SIDE - 1), (SIDE // 2, SIDE // 3), (SIDE - 1, 0), (last_row, col_past_2_31),
              (SIDE - 1, SIDE - 1)]
    values = torch.randn(len(points), generator=torch.Generator().manual_seed(1)).half()
    grad_output = y.zero_()
    expected_gw = torch.zeros(3, 3, dtype=torch.float64)
    x_padded_at = lambda h, v: x[0, 0, h, v].item() if 0 <= h < SIDE and 0 <= v < SIDE else 0.0  # noqa: E731
    for (p, q), value in zip(points, values):
        grad_output[0, 0, p, q] = value
        for r in range(3):
            for s in range(3):
                expected_gw[r, s] += value.item() * x_padded_at(p + r - 1, q + s - 1)
    gw = ops.corr2d_weight_grad(grad_output, x, [3, 3], *config)
    gb = ops.corr2d_bias_grad(grad_output)
    assert_matches(gw[0, 0].cpu(), expected_gw, torch.float16)
    assert_matches(gb.cpu(), values.double().sum().reshape(1), torch.float16)
