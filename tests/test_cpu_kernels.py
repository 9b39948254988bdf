"""Each CPU kernel path (csrc/cpu/) against F.conv2d: problems sized to reach every tile, block and tail.

Lanes per vector are 16 float32 / 8 float64 with AVX-512 and half that with AVX2; the channel counts below
reach the same paths on both.
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
    # weight gradient with two vectors of channels per tile (four in the cases above)
    "channel_sums_two_vectors": P(2, 3, 10, 10, 24, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    # weight gradient with exactly one vector of channels
    "channel_sums_one_vector": P(2, 3, 10, 10, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1, False),
    "channel_sums_one_vector_f64": P(2, 3, 10, 10, 8, 3, 3, (1, 1), (1, 1), (1, 1), 1, False),
    # pixel_tile with every block size, and a partial last block
    **{f"pixel_tile_k{k}": P(2, 3, 12, 37, k, 3, 2, (1, 1), (1, 0), (1, 1), 1, True) for k in (1, 2, 3, 5, 7, 8, 11, 20)},
    # depthwise and channel multipliers
    "depthwise": P(2, 12, 15, 17, 12, 3, 3, (1, 1), (1, 1), (1, 1), 12, True),
    "depthwise_multiplier": P(2, 4, 15, 17, 12, 5, 5, (1, 1), (2, 2), (1, 1), 4, True),
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
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", PATHS)
def test_kernel_path_matches_conv2d(name, dtype):
    problem = PATHS[name]
    generator = torch.Generator().manual_seed(7)
    x, w, b = problem.tensors(dtype, generator=generator)
    config = problem.config()
    grad_output = torch.randn(oracle(x, w, b, **config).shape, dtype=torch.float64, generator=generator)
    actual = gradients(torchcorr.corr2d, x, w, b, grad_output, **config)
    expected = gradients(oracle, x, w, b, grad_output, **config)
    for got, want in zip(actual, expected):
        assert got.dtype == dtype
        assert_matches(got, want, dtype)
