"""Each CPU kernel path (csrc/cpu/) against F.conv2d: problems sized to reach every tile, block and tail.

Lanes per vector are 16 float32 / 8 float64 with AVX-512 and half that with AVX2 (a quarter for the baseline);
the channel counts below reach the same paths on every level (tests/test_cpu_isa.py reruns them on each).
"""

import pytest
import torch

import torchcorr

from conftest import Problem, assert_matches, oracle
from test_functional import gradients

P = Problem
PATHS = {
    # forward and input gradient: channel_tile (more than four vectors of output channels per group),
    # with a one-vector block left over; weight gradient: two-vector channel_sums
    "channel_tile": P(2, 5, 11, 13, 80, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "channel_tile_odd": P(2, 6, 9, 10, 72, 2, 3, (1, 1), (0, 1), (1, 1), 1, True),
    "channel_tile_grouped": P(1, 8, 9, 9, 144, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
    # weight gradient through channel_sums (more than kMaxPixelSumOutputs = 16384 outputs per group, weight_grad.h)
    # with four, two and one vector of channels per tile (AVX-512 lanes)
    "channel_sums_four_vectors": P(2, 33, 7, 6, 70, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "channel_sums_two_vectors": P(2, 80, 6, 7, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "channel_sums_one_vector": P(2, 120, 6, 5, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, False),
    "channel_sums_one_vector_f64": P(2, 230, 5, 5, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, False),
    # weight gradient through pixel_sums for many output channels but few taps: a stem (3 input channels,
    # strided 7x7), with a partial last block of 4 channels
    "pixel_sums_stem": P(2, 3, 30, 31, 42, 7, 7, (2, 2), (3, 3), (1, 1), 1, True),
    # stems in channels_last (padded_rows_correlation): rows of 3-4 channel pixels read as they are, outputs
    # 6 and 12 values apart (strides 2 and 4) and any other step, dilation, a partial vector of output channels
    "stem_patchify": P(2, 3, 17, 18, 24, 4, 4, (4, 4), (0, 0), (1, 1), 1, True),
    "stem_dilated": P(1, 4, 15, 20, 9, 3, 3, (2, 1), (2, 1), (1, 2), 1, True),
    # pixel_tile with every block size, and a partial last block
    **{f"pixel_tile_k{k}": P(2, 3, 12, 37, k, 3, 2, (1, 1), (1, 0), (1, 1), 1, True) for k in (1, 2, 3, 5, 7, 8, 11, 20)},
    # depthwise and channel multipliers
    "depthwise": P(2, 12, 15, 17, 12, 3, 3, (1, 1), (1, 1), (1, 1), 12, True),
    "depthwise_multiplier": P(2, 4, 15, 17, 12, 5, 5, (1, 1), (2, 2), (1, 1), 4, True),
    # depthwise on small planes with channels across the lanes (channel_vectors.h): whole blocks of channels
    # and a partial one, rows of 3/5/7 taps at strides 1 and 2, a dilated kernel, many runs per row, 1x1 planes;
    # weight gradient: 7x7 kernels in tiles of kernel rows (3 + 3 + 1 with AVX-512), 5x5 in 4 + 1
    "channel_vectors_7x7_plane": P(1, 35, 7, 7, 35, 7, 7, (1, 1), (3, 3), (1, 1), 35, True),
    "channel_vectors_5x5_stride2": P(2, 20, 14, 13, 20, 5, 5, (2, 2), (2, 2), (1, 1), 20, True),
    "channel_vectors_7x7_stride2": P(1, 16, 15, 16, 16, 7, 7, (2, 2), (3, 3), (1, 1), 16, False),
    "channel_vectors_dilated": P(1, 17, 9, 10, 17, 3, 3, (1, 1), (2, 2), (2, 2), 17, True),
    "channel_vectors_wide_rows": P(2, 32, 5, 30, 32, 3, 3, (1, 1), (1, 1), (1, 1), 32, True),
    "channel_vectors_one_pixel": P(3, 16, 1, 1, 16, 3, 3, (1, 1), (1, 1), (1, 1), 16, False),
    # read in place in channels_last (kernels up to 3 wide): runs inside the rows, the last one moved back,
    # border columns one at a time; stride 2, and a 2-wide kernel without padding across
    "channel_vectors_in_place_stride2": P(2, 32, 21, 40, 32, 3, 3, (2, 2), (1, 1), (1, 1), 32, True),
    "channel_vectors_in_place_3x2": P(1, 16, 9, 27, 16, 3, 2, (1, 1), (1, 0), (1, 1), 16, True),
    # strided input gradients, every stride phase at once: phases with different tap counts and offsets, and
    # phases no tap reaches (kernel 2 at stride 3; dilation 2 at stride 2)
    "channel_vectors_phases_uneven": P(2, 18, 10, 11, 18, 2, 3, (3, 2), (1, 0), (1, 1), 18, True),
    "channel_vectors_phases_dilated": P(1, 16, 12, 12, 16, 3, 3, (2, 2), (2, 2), (2, 2), 16, False),
    # depthwise planes too large to stage whole: pixel tiles on planes, channel vectors a band of rows at a
    # time in channels_last (64 KB of staged rows: several bands, the last one short)
    "channel_vectors_bands": P(2, 20, 40, 60, 20, 3, 3, (1, 1), (1, 1), (1, 1), 20, True),
    "channel_vectors_bands_stride2": P(1, 16, 45, 70, 16, 5, 5, (2, 2), (2, 2), (1, 1), 16, False),
    "channel_vectors_bands_7x7": P(1, 24, 50, 33, 24, 7, 7, (1, 1), (3, 3), (1, 1), 24, True),
    # groups of G input and output channels with channels across the lanes in channels_last (G = 8, 4, 2, 16;
    # planes take the pixel tiles): a last block of half a vector, strides, stride phases of the input
    # gradient, a 5x3 kernel dilated across, several bands of rows
    "grouped_channel_vectors": P(2, 40, 13, 11, 40, 3, 3, (1, 1), (1, 1), (1, 1), 5, True),
    "grouped_channel_vectors_stride2": P(2, 24, 15, 14, 24, 3, 3, (2, 2), (1, 1), (1, 1), 6, True),
    "grouped_channel_vectors_5x3": P(1, 32, 9, 12, 32, 5, 3, (1, 2), (2, 1), (1, 2), 16, False),
    "grouped_channel_vectors_16": P(1, 32, 8, 8, 32, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
    "grouped_channel_vectors_bands": P(1, 16, 70, 90, 16, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
    # strides: stride phases in the staging, and in the input gradient phases no tap reaches
    "strided": P(2, 4, 17, 19, 6, 3, 3, (2, 3), (1, 1), (1, 1), 1, True),
    "strided_1x1": P(2, 8, 16, 15, 70, 1, 1, (2, 2), (0, 0), (1, 1), 1, True),
    "strided_dilated": P(2, 3, 23, 21, 5, 3, 2, (3, 2), (2, 1), (2, 3), 1, True),
    "stride_exceeds_kernel": P(1, 2, 20, 20, 3, 2, 2, (4, 5), (0, 1), (1, 1), 1, True),
    # padding wider than the dilated kernel: the input gradient crops instead of padding
    "wide_padding": P(2, 3, 7, 8, 4, 1, 3, (1, 1), (2, 3), (1, 1), 1, True),
    # many staged row blocks (wide rows of many channels) and several weight-gradient chunks
    "row_blocks": P(1, 64, 40, 90, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "weight_grad_chunks": P(4, 96, 40, 40, 80, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    # a kernel as tall as the padded image, and a 1-pixel output
    "single_output": P(3, 2, 5, 6, 3, 5, 6, (1, 1), (0, 0), (1, 1), 1, True),
    # the gemm family (csrc/cpu/algorithm.h): 1x1 layers with tiles of rows and columns cut short, more than one
    # depth step (K > 256), row block (M > 48 tiles) and column block, strides, 1x1 and 7x7 planes, batch 1;
    # kxk layers through the input windows: padding, dilation, a crop (padding wider than the kernel), strides
    "gemm_tails": P(2, 19, 9, 11, 17, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_deep": P(1, 300, 7, 7, 40, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_many_rows": P(2, 24, 5, 5, 600, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_many_columns": P(1, 16, 56, 57, 16, 1, 1, (1, 1), (0, 0), (1, 1), 1, False),
    # products of at most a vector of columns (5 output channels in channels_last, 13 input channels for the
    # input gradient; one pixel in NCHW), two strips of rows at once, a last strip cut short
    "gemm_narrow": P(2, 13, 7, 9, 5, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_narrow_one_pixel": P(3, 21, 1, 1, 29, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_strided": P(2, 16, 15, 14, 24, 1, 1, (2, 3), (0, 0), (1, 1), 1, True),
    "gemm_one_pixel": P(3, 20, 1, 1, 30, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_3x3": P(2, 20, 9, 8, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "gemm_3x3_7x7_plane": P(1, 64, 7, 7, 80, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "gemm_3x3_strided": P(2, 17, 11, 10, 19, 3, 3, (2, 2), (1, 1), (1, 1), 1, True),
    # a strided input gradient with a phase no tap reaches (kernel 2, stride 3) and a patchify layer (kernel =
    # stride): one product per stride phase (input_grad_phases.h)
    "gemm_strided_phases": P(2, 16, 11, 13, 18, 2, 3, (3, 2), (1, 0), (1, 1), 1, True),
    "gemm_patchify": P(2, 16, 8, 10, 20, 2, 2, (2, 2), (0, 0), (1, 1), 1, True),
    "gemm_dilated": P(1, 16, 12, 13, 18, 5, 3, (1, 1), (3, 0), (2, 1), 1, True),
    "gemm_crop": P(2, 16, 6, 7, 16, 1, 3, (1, 1), (2, 3), (1, 1), 1, True),
    "gemm_7x7_stem_like": P(2, 16, 20, 22, 32, 7, 7, (2, 2), (3, 3), (1, 1), 1, False),
    "gemm_single": P(1, 1, 1, 1, 1, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    # a 1x1 weight gradient with few outputs and a long sum: its reduction split into slots (gemm.h), across
    # images and within one
    "gemm_reduction_slots": P(3, 20, 64, 60, 24, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    "gemm_reduction_slots_one_image": P(1, 17, 80, 70, 19, 1, 1, (1, 1), (0, 0), (1, 1), 1, False),
    # the weight gradient of one image's grouped layer, a product per group (per-sample gradients under vmap):
    # partial strips of rows (9 outputs) and columns (4 x 3 x 2 taps), strided, cropped
    "gemm_per_group_weight_grad": P(1, 12, 9, 8, 27, 3, 2, (2, 1), (1, 0), (1, 1), 3, True),
    "gemm_per_group_weight_grad_strided_1x1": P(1, 32, 9, 9, 16, 1, 1, (2, 2), (0, 0), (1, 1), 2, True),
}


FAMILIES = {"chosen": dict(), "direct": dict(gemm=False, winograd=False), "gemm": dict(gemm_everywhere=True)}
# Activations (x, y and their gradients) as planes or channels_last: every kernel computes in channels_last
# natively but the windowed GEMM's forward pass and input gradient (csrc/cpu/algorithm.h, compute_layout).
# The weights contiguous, or in channels_last too, as a model moved to channels_last holds them (the kernels
# read them so, and write the weight gradient so where they can).
LAYOUTS = {"planes": (torch.contiguous_format, torch.contiguous_format),
           "channels_last": (torch.channels_last, torch.contiguous_format),
           "channels_last_model": (torch.channels_last, torch.channels_last)}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PATHS)
def test_kernel_path_matches_conv2d(name, dtype, family, layout):
    """Every path with the algorithm the dispatcher chooses, with the direct kernels only (gemm off), and with
    the GEMM wherever it can run (csrc/cpu/algorithm.h), in both layouts."""
    with torchcorr.backends.cpu.flags(**FAMILIES[family]):
        check_path(PATHS[name], dtype, *LAYOUTS[layout])


def check_path(problem, dtype, memory_format=torch.contiguous_format, weight_format=torch.contiguous_format):
    generator = torch.Generator().manual_seed(7)
    x, w, b = problem.tensors(dtype, generator=generator)
    x, w = x.contiguous(memory_format=memory_format), w.contiguous(memory_format=weight_format)
    config = problem.config()
    grad_output = torch.randn(oracle(x, w, b, **config).shape, dtype=torch.float64, generator=generator)
    grad_output = grad_output.contiguous(memory_format=memory_format)
    actual = gradients(torchcorr.corr2d, x, w, b, grad_output, **config)
    expected = gradients(oracle, x, w, b, grad_output, **config)
    for got, want in zip(actual, expected):
        assert got.dtype == dtype
        assert_matches(got, want, dtype)
    # y, gx and gw come back in the layout of x, grad_output and x, as torch's y and gx (unless those are both: one
    # channel or pixel), and gw in channels_last as a model in channels_last holds its weights
    for result, operand in zip(actual[:3], (x, grad_output, x)):
        if not (operand.is_contiguous() and operand.is_contiguous(memory_format=torch.channels_last)):
            assert result.is_contiguous(memory_format=memory_format)


def test_gemm_switches():
    cpu = torchcorr.backends.cpu
    assert (cpu.gemm, cpu.gemm_everywhere, cpu.winograd) == (True, False, True)
    with cpu.flags(gemm=False):
        assert (cpu.gemm, cpu.gemm_everywhere, cpu.winograd) == (False, False, True)
    with cpu.flags(gemm_everywhere=True):
        assert (cpu.gemm, cpu.gemm_everywhere) == (True, True)
    with cpu.flags(winograd=False):
        assert (cpu.gemm, cpu.winograd) == (True, False)
    assert (cpu.gemm, cpu.gemm_everywhere, cpu.winograd) == (True, False, True)


def test_large_outputs_come_from_reused_blocks():
    # Outputs from 32 MiB on come from cached blocks (csrc/cpu/output_blocks.h): a freed one is reused by the next
    # output of its size, and the results stay F.conv2d's. 9 x 1024 x 1024 float32: 37.7 MB.
    cpu = torchcorr.backends.cpu
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(1, 2, 1024, 1024, generator=generator)
    w = torch.randn(9, 2, 3, 3, generator=generator)
    expected = torch.nn.functional.conv2d(x, w, padding=1)
    cpu.empty_cache()
    y = torchcorr.corr2d(x, w, padding=1)
    torch.testing.assert_close(y, expected)
    block = y.data_ptr()
    del y
    assert cpu.cached_bytes() >= 9 * 1024 * 1024 * 4
    y = torchcorr.corr2d(x, w, padding=1)
    assert y.data_ptr() == block
    torch.testing.assert_close(y, expected)
    # the input gradient's 37.7 MB output takes the same block once y is gone
    gy = torch.randn(1, 1, 1024, 1024, generator=generator)
    w1 = torch.randn(1, 9, 3, 3, generator=generator)
    del y
    gx = torch.ops.torchcorr.corr2d_input_grad(gy, w1, [1024, 1024], [1, 1], [1, 1], [1, 1], 1)
    assert gx.data_ptr() == block
    x9 = torch.zeros(1, 9, 1024, 1024, requires_grad=True)
    torch.nn.functional.conv2d(x9, w1, padding=1).backward(gy)
    torch.testing.assert_close(gx, x9.grad)
    # a cached output is an ordinary tensor: it can be resized, its values kept
    kept = gx[0, :, :4, :4].clone()
    gx.resize_(2, 9, 1024, 1024)
    torch.testing.assert_close(gx[0, :, :4, :4], kept)
    del gx
    cpu.empty_cache()
    assert cpu.cached_bytes() == 0
    try:
        cpu.cache_large_outputs = False
        y = torchcorr.corr2d(x, w, padding=1)
        del y
        assert cpu.cached_bytes() == 0
    finally:
        cpu.cache_large_outputs = True


# The Winograd family (kernels/winograd.h): stride-1 3x3 layers of one group with at least 16 channels each
# side, in float32 (csrc/cpu/algorithm.cpp, winograd_plan). The block driver (more tiles of 4x4 than twice the
# output channels) with output tiles 4x4 (from 48 tiles on) or 2x2, and the strip driver (fewer tiles) with 4x4
# (from 24 tiles on) or 2x2 (fewer tiles, or a 5x5 plane); each forward pass and input gradient (whose output
# channels are the layer's input channels) checked here. Planes that tiles do not cover, channel counts that are not
# whole vectors (17, 33) or longer than a depth step (150 > 128 for the strips, 260 > 256 for the blocks), every
# padding (the input gradient's virtual padding is 2 - padding), several tile blocks (more than 96 tiles), and
# several blocks of output channels (K > 128) or strips of them (K > 32, the last one partial). Weight gradients
# (F(3x3, 2x2)) of few channels sum slots of at least 128 tiles of 2x2 apart ("grad_slots": 8 of them), of more
# channels ("deep") chunks of tiles.
WINOGRAD_PATHS = {
    "f4_tails": P(6, 17, 11, 13, 33, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),  # blocks F(4x4)
    "f2_tails": P(10, 17, 7, 7, 18, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),  # blocks F(2x2)
    "strips_f4_tails": P(2, 17, 11, 13, 33, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "f2_small_plane": P(3, 16, 5, 6, 20, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),  # strips F(2x2)
    "no_padding": P(2, 20, 10, 9, 24, 3, 3, (1, 1), (0, 0), (1, 1), 1, False),
    "wide_padding": P(2, 18, 7, 8, 16, 3, 3, (1, 1), (2, 1), (1, 1), 1, True),
    "many_tile_blocks": P(4, 16, 30, 31, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "output_channel_blocks": P(12, 16, 18, 18, 140, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "output_channel_strips": P(1, 24, 18, 18, 140, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "deep": P(2, 260, 20, 20, 20, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),  # its input gradient: strips, K 260
    "strips_deep": P(3, 150, 9, 9, 40, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    "grad_slots": P(4, 16, 64, 64, 26, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("winograd", [True, False])
@pytest.mark.parametrize("name", WINOGRAD_PATHS)
def test_winograd_path_matches_conv2d(name, winograd, layout):
    """float32 with Winograd on (the forward pass and input gradient take it) and off (direct)."""
    with torchcorr.backends.cpu.flags(winograd=winograd):
        check_path(WINOGRAD_PATHS[name], torch.float32, *LAYOUTS[layout])


def winograd_and_direct(problem, dtype, generator):
    """(y, gx, gw) of problem with Winograd on and off, and the float64 oracle's."""
    x, w, b = problem.tensors(dtype, generator=generator)
    config = problem.config()
    grad_output = torch.randn(oracle(x, w, b, **config).shape, dtype=torch.float64, generator=generator)
    results = []
    for winograd in (True, False):
        with torchcorr.backends.cpu.flags(winograd=winograd):
            results.append(gradients(torchcorr.corr2d, x, w, b, grad_output, **config)[:3])
    return results + [gradients(oracle, x, w, b, grad_output, **config)[:3]]


@pytest.mark.parametrize("name", WINOGRAD_PATHS)
def test_winograd_runs_and_its_error_is_within_5x_of_direct(name):
    """On random float32 problems, Winograd's largest error against the float64 oracle, for y, gx and gw, is
    within 5x of the direct kernels' (F(4x4, 3x3) interpolates at 0, ±1, 1/2, -2 to keep it small) and within the
    float32 tolerance; its results differ from the direct ones in the last bits, so it did run. (Weight gradients
    of fewer than 48 tiles of 2x2 outputs do not take Winograd.)"""
    problem = WINOGRAD_PATHS[name]
    generator = torch.Generator().manual_seed(11)
    winograd, direct, exact = winograd_and_direct(problem, torch.float32, generator)
    P, Q = (size + 2 * pad - 2 for size, pad in zip((problem.H, problem.W), problem.padding))
    grad_tiles = problem.N * -(-P // 2) * -(-Q // 2)
    for got, reference, want in list(zip(winograd, direct, exact))[:3 if grad_tiles >= 48 else 2]:
        assert not torch.equal(got, reference)
        error, direct_error = ((t.double() - want).abs().max().item() for t in (got, reference))
        assert error <= 5 * direct_error, (error, direct_error)
        assert_matches(got, want, torch.float32)


def test_winograd_leaves_float64_direct():
    generator = torch.Generator().manual_seed(3)
    winograd, direct, _ = winograd_and_direct(WINOGRAD_PATHS["f4_tails"], torch.float64, generator)
    for got, reference in zip(winograd, direct):
        assert torch.equal(got, reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_winograd_half_precision_computes_in_float32(dtype):
    generator = torch.Generator().manual_seed(5)
    winograd, _, exact = winograd_and_direct(WINOGRAD_PATHS["f4_tails"], dtype, generator)
    for got, want in zip(winograd, exact):
        assert got.dtype == dtype
        assert_matches(got, want, dtype)


def test_one_element_bias_is_not_modified():
    """A 1x1x1x1 problem: the result must not share memory with the bias it starts from."""
    x, w, b = torch.full((1, 1, 1, 1), 2.0), torch.full((1, 1, 1, 1), 3.0), torch.tensor([10.0])
    for _ in range(3):
        assert torchcorr.corr2d(x, w, b).item() == 16.0
    assert b.item() == 10.0
