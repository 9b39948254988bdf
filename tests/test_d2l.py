"""The worked examples of the D2L chapter on convolutional networks, with the book's numbers."""

import pytest
import torch

import torchcorr
from torchcorr import reference

X = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
K = torch.tensor([[0.0, 1.0], [2.0, 3.0]])

IMPLEMENTATIONS = [torchcorr.corr2d, reference.corr2d]


def edge_image():
    image = torch.ones(6, 8)
    image[:, 2:6] = 0
    return image


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_corr2d_2x2(corr2d):
    assert torch.equal(corr2d(X, K), torch.tensor([[19.0, 25.0], [37.0, 43.0]]))


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_edge_detection(corr2d):
    edges = corr2d(edge_image(), torch.tensor([[1.0, -1.0]]))
    assert torch.equal(edges, torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]]).expand(6, 7))
    # The same kernel finds nothing in the transposed image: it only sees vertical edges.
    assert torch.equal(corr2d(edge_image().t(), torch.tensor([[1.0, -1.0]])), torch.zeros(8, 5))


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_padding_and_stride(corr2d):
    x, k = X[None, None], K[None, None]
    padded = torch.tensor([[0.0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]])
    assert torch.equal(corr2d(x, k, padding=1)[0, 0], padded)
    assert torch.equal(corr2d(x, k, padding=1, stride=(3, 2))[0, 0], torch.tensor([[0.0, 8], [6, 8]]))


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_output_shapes(corr2d):
    x = torch.rand(1, 1, 8, 8)
    assert corr2d(x, torch.rand(1, 1, 3, 3), padding=1).shape[2:] == (8, 8)
    assert corr2d(x, torch.rand(1, 1, 5, 3), padding=(2, 1)).shape[2:] == (8, 8)
    assert corr2d(x, torch.rand(1, 1, 3, 3), padding=1, stride=2).shape[2:] == (4, 4)
    assert corr2d(x, torch.rand(1, 1, 3, 5), padding=(0, 1), stride=(3, 4)).shape[2:] == (2, 2)


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_multiple_input_and_output_channels(corr2d):
    x = torch.stack([X, X + 1])  # unbatched (C, H, W)
    k = torch.stack([K, K + 1])
    assert torch.equal(corr2d(x, k[None]), torch.tensor([[[56.0, 72], [104, 120]]]))
    stacked = torch.stack([k, k + 1, k + 2])
    expected = torch.tensor([[[56.0, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]])
    assert torch.equal(corr2d(x, stacked), expected)


def test_1x1_is_a_matrix_product(generator):
    x = torch.randn(3, 3, 3, generator=generator, dtype=torch.float64)
    k = torch.randn(2, 3, 1, 1, generator=generator, dtype=torch.float64)
    expected = (k.reshape(2, 3) @ x.reshape(3, 9)).reshape(2, 3, 3)
    torch.testing.assert_close(torchcorr.corr2d(x, k), expected)


def test_convolution_flips_the_kernel():
    assert torch.equal(torchcorr.conv2d(X, K), torchcorr.corr2d(X, K.flip(0, 1)))
    assert torch.equal(torchcorr.conv2d(X, K), torch.tensor([[5.0, 11.0], [23.0, 29.0]]))
    assert torch.equal(reference.conv2d(X, K), torchcorr.conv2d(X, K))


def test_conv2d_layer_learns_the_edge_kernel():
    """D2L 7.2.4: learn [1, -1] back from the edge image and its edges."""
    torch.manual_seed(0)
    image = edge_image()
    target = torchcorr.corr2d(image, torch.tensor([[1.0, -1.0]]))
    layer = torchcorr.nn.Conv2D((1, 2))
    for _ in range(100):
        loss = ((layer(image) - target) ** 2).sum()
        layer.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in layer.parameters():
                parameter -= 1e-2 * parameter.grad  # the bias sees 42 pixels: 3e-2 diverges
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[1.0, -1.0]]), atol=0.05, rtol=0)
    assert loss.item() < 1e-2


def test_corr2d_layer_learns_the_edge_kernel():
    """The book's version: a bias-free convolution layer on (1, 1, 6, 8) batches."""
    torch.manual_seed(0)
    image = edge_image().reshape(1, 1, 6, 8)
    target = torchcorr.corr2d(image, torch.tensor([[[[1.0, -1.0]]]]))
    layer = torchcorr.nn.Corr2d(1, 1, kernel_size=(1, 2), bias=False)
    for _ in range(10):
        loss = ((layer(image) - target) ** 2).sum()
        layer.zero_grad()
        loss.backward()
        layer.weight.data[:] -= 3e-2 * layer.weight.grad
    torch.testing.assert_close(layer.weight.detach().reshape(1, 2), torch.tensor([[1.0, -1.0]]), atol=0.1, rtol=0)
