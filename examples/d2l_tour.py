"""A tour of the worked examples of D2L's chapter on convolutional networks (sections 7.2-7.4),
computed with torchcorr and checked against the book's numbers.

    .venv/bin/python examples/d2l_tour.py      exits with status 1 if any check fails

main() runs the tour and returns the number of failed checks, so a test can import and call it.
"""

import sys
from itertools import zip_longest

import torch

import torchcorr
from torchcorr.nn import Conv2D, Corr2d

SEED = 0
_results = []  # (name, passed) for every check of the current run


# ------------------------------------------------------------------ helpers

def _mark(passed):
    tick = "\u2713"
    try:
        tick.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        tick = "ok"
    return tick if passed else "MISMATCH"


def _lines(value):
    """A value as printable lines: one per matrix row, channels of a 3-D tensor separated by a blank."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dim() == 3:
            return [line for i, channel in enumerate(value) for line in ([""] if i else []) + _lines(channel)]
        if value.dim() == 2:
            cells = [[f"{v:.4g}" for v in row] for row in value.tolist()]
            width = max(len(cell) for row in cells for cell in row)
            return ["[" + " ".join(cell.rjust(width) for cell in row) + "]" for row in cells]
        value = value.tolist()
    if isinstance(value, float):
        return [f"{value:.3g}"]
    return [str(value)]


def check(name, got, expected, atol=1e-5):
    """Compare a computed value with the book's, print both side by side, record the outcome.

    Tensors must match in shape and agree within atol; anything else (shapes) must be equal.
    """
    if isinstance(got, torch.Tensor):
        expected_t = torch.as_tensor(expected, dtype=got.dtype)
        passed = got.shape == expected_t.shape and torch.allclose(got.detach().cpu(), expected_t, rtol=0, atol=atol)
        expected = expected_t
    elif isinstance(got, float):
        passed = abs(got - expected) <= atol
    else:
        passed = got == expected
    _results.append((name, passed))
    print(f"  {name:<60} {_mark(passed)}")
    got_lines, expected_lines = _lines(got), _lines(expected)
    width = max(len("computed"), *(len(line) for line in got_lines))
    print(f"      {'computed':<{width}}   expected")
    for left, right in zip_longest(got_lines, expected_lines, fillvalue=""):
        print(f"      {left:<{width}}   {right}".rstrip())
    return passed


def section(title):
    print(f"\n== {title}")


# The running example of 7.2-7.4: a 3x3 image and a 2x2 kernel.
X3 = torch.arange(9.0).reshape(3, 3)
K2 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])


def _edge_image():
    X = torch.ones(6, 8)
    X[:, 2:6] = 0
    return X


# ------------------------------------------------------------------ sections

def cross_correlation():
    section("7.2.1 The cross-correlation operation")
    check("corr2d(X, K)", torchcorr.corr2d(X3, K2), [[19, 25], [37, 43]])
    layer = Conv2D((2, 2))  # 7.2.2: the book's Conv2D layer, given K as its weight
    with torch.no_grad():
        layer.weight.copy_(K2)
    check("Conv2D layer with weight K, bias 0", layer(X3), [[19, 25], [37, 43]])


def edge_detection():
    section("7.2.3 Object edge detection in images")
    X, K = _edge_image(), torch.tensor([[1.0, -1.0]])
    check("Y = corr2d(X, [[1, -1]]): edges at columns 1 and 5", torchcorr.corr2d(X, K),
          [[0, 1, 0, 0, 0, -1, 0]] * 6)
    check("corr2d(X.t(), K): horizontal edges are not detected", torchcorr.corr2d(X.t(), K),
          [[0, 0, 0, 0, 0]] * 8)


def learning_a_kernel():
    section("7.2.4 Learning a kernel")
    X = _edge_image()
    Y = torchcorr.corr2d(X, torch.tensor([[1.0, -1.0]]))
    X, Y = X.reshape(1, 1, 6, 8), Y.reshape(1, 1, 6, 7)
    conv = Corr2d(1, 1, kernel_size=(1, 2), bias=False)
    lr = 3e-2
    for i in range(10):
        loss = (conv(X) - Y) ** 2
        conv.zero_grad()
        loss.sum().backward()
        with torch.no_grad():
            conv.weight -= lr * conv.weight.grad
        if (i + 1) % 2 == 0:
            print(f"  epoch {i + 1}, loss {loss.sum():.3f}")
    check("learned kernel (book: close to [[1, -1]], here within 0.1)",
          conv.weight.detach().reshape(1, 2), [[1.0, -1.0]], atol=0.1)


def convolution_vs_correlation():
    section("7.2.5 Cross-correlation and convolution")
    flipped = K2.flip(0, 1)  # [[3, 2], [1, 0]]
    conv = torchcorr.conv2d(X3, K2)
    check("conv2d(X, K) (strict convolution; worked by hand)", conv, [[5, 11], [23, 29]])
    check("conv2d(X, K) == corr2d(X, K flipped = [[3, 2], [1, 0]])", conv, torchcorr.corr2d(X3, flipped))
    symmetric = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # unchanged by a flip in both dims
    check("kernel [[1, 2], [2, 1]]: conv2d == corr2d", torchcorr.conv2d(X3, symmetric),
          torchcorr.corr2d(X3, symmetric))


def padding_and_stride():
    section("7.3 Padding and stride")

    def comp_conv2d(conv, X):  # the book's helper: batch the image, keep the spatial output
        Y = conv(X.reshape(1, 1, *X.shape))
        return Y.reshape(Y.shape[2:])

    X = torch.rand(8, 8)
    shapes = [
        ("3x3 kernel, padding 1", Corr2d(1, 1, kernel_size=3, padding=1), (8, 8)),
        ("(5,3) kernel, padding (2,1)", Corr2d(1, 1, kernel_size=(5, 3), padding=(2, 1)), (8, 8)),
        ("3x3 kernel, padding 1, stride 2", Corr2d(1, 1, kernel_size=3, padding=1, stride=2), (4, 4)),
        ("(3,5) kernel, padding (0,1), stride (3,4)",
         Corr2d(1, 1, kernel_size=(3, 5), padding=(0, 1), stride=(3, 4)), (2, 2)),
    ]
    for name, conv, expected in shapes:
        check(f"8x8 input, {name}: shape", tuple(comp_conv2d(conv, X).shape), expected)
    check("corr2d(X, K, padding=1)", torchcorr.corr2d(X3, K2, padding=1),
          [[0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]])
    check("corr2d(X, K, padding=1, stride=(3, 2))", torchcorr.corr2d(X3, K2, padding=1, stride=(3, 2)),
          [[0, 8], [6, 8]])


def multiple_input_channels():
    section("7.4.1 Multiple input channels")
    X, K = torch.stack((X3, X3 + 1)), torch.stack((K2, K2 + 1))
    check("sum over 2 input channels: corr2d(X[None], K[None])", torchcorr.corr2d(X[None], K[None])[0, 0],
          [[56, 72], [104, 120]])


def multiple_output_channels():
    section("7.4.2 Multiple output channels")
    X, K = torch.stack((X3, X3 + 1)), torch.stack((K2, K2 + 1))
    K3 = torch.stack((K, K + 1, K + 2))
    check(f"3 output channels, weight {tuple(K3.shape)}", torchcorr.corr2d(X, K3),
          [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]])


def one_by_one():
    section("7.4.3 1x1 convolutional layer")
    X, K = torch.randn(3, 3, 3), torch.randn(2, 3, 1, 1)
    as_matmul = (K.reshape(2, 3) @ X.reshape(3, 9)).reshape(2, 3, 3)
    difference = (torchcorr.corr2d(X, K) - as_matmul).abs().max().item()
    check("max |corr2d(X, K 1x1) - K @ X as a matrix product|", difference, 0.0, atol=1e-5)


SECTIONS = [cross_correlation, edge_detection, learning_a_kernel, convolution_vs_correlation,
            padding_and_stride, multiple_input_channels, multiple_output_channels, one_by_one]


def describe_build():
    info = torchcorr.build_info()
    if not info.get("native"):
        return f"torchcorr {torchcorr.__version__}: reference fallback (pure PyTorch; native library not loaded)"
    cuda = f"CUDA {info.get('cuda_version')} for arch {info.get('cuda_archs')}" if info.get("cuda") else "no CUDA"
    return (f"torchcorr {torchcorr.__version__}: native kernels (CPU: {info.get('simd')} SIMD, "
            f"OpenMP {'on' if info.get('openmp') else 'off'}; {cuda}), torch {torch.__version__}")


def main():
    """Run the tour on CPU; returns the number of failed checks."""
    _results.clear()
    print(describe_build())
    with torch.random.fork_rng(devices=[]):  # reproducible, and leaves the caller's RNG state alone
        torch.manual_seed(SEED)
        for run_section in SECTIONS:
            run_section()
    failures = [name for name, passed in _results if not passed]
    print(f"\nD2L tour: {len(_results) - len(failures)}/{len(_results)} checks passed")
    for name in failures:
        print(f"  MISMATCH: {name}")
    return len(failures)


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
