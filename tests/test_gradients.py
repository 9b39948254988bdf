"""gradcheck / gradgradcheck of the native ops and the reference, and torch.library.opcheck."""

import pytest
import torch

import torchcorr
from torchcorr import reference

from conftest import Problem

ops = torch.ops.torchcorr

PROBLEMS = {
    "plain": Problem(2, 2, 6, 7, 3, 3, 2, (1, 1), (0, 0), (1, 1), 1, True),
    "strided_padded": Problem(1, 3, 7, 8, 2, 3, 3, (2, 3), (1, 2), (1, 1), 1, True),
    "dilated_grouped": Problem(2, 4, 8, 7, 4, 2, 3, (1, 2), (2, 1), (2, 2), 2, False),
    "depthwise": Problem(1, 3, 6, 6, 3, 3, 3, (1, 1), (1, 1), (1, 1), 3, True),
}


@pytest.mark.parametrize("fn", [torchcorr.corr2d, reference.corr2d], ids=["native", "reference"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_gradcheck_and_gradgradcheck(fn, name):
    problem = PROBLEMS[name]
    generator = torch.Generator().manual_seed(1)
    tensors = [t for t in problem.tensors(requires_grad=True, generator=generator) if t is not None]

    def corr(x, w, *bias):
        return fn(x, w, bias[0] if bias else None, **problem.config())

    assert torch.autograd.gradcheck(corr, tensors)
    assert torch.autograd.gradgradcheck(corr, tensors)


def test_third_order_gradients():
    """The ops are closed under differentiation: a third derivative is just more of the same ops."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, dtype=torch.float64, generator=generator, requires_grad=True)

    def cubic(x, w):
        return (torchcorr.corr2d(x, w, padding=1) ** 3).sum()

    assert torch.autograd.gradgradcheck(lambda x, w: torch.autograd.grad(cubic(x, w), (x, w), create_graph=True),
                                        (x, w))


def op_samples():
    """(op, args) for every op, over the problems above, in float32 and float64."""
    for name, problem in PROBLEMS.items():
        for dtype in (torch.float32, torch.float64):
            generator = torch.Generator().manual_seed(3)
            x, w, b = problem.tensors(dtype, requires_grad=True, generator=generator)
            config = list(problem.config().values())
            y = ops.corr2d_forward(x.detach(), w.detach(), None, *config)
            gy = torch.randn(y.shape, dtype=torch.float64, generator=generator).to(dtype).requires_grad_()
            yield f"forward-{name}-{dtype}", ops.corr2d_forward.default, (x, w, b, *config)
            yield f"input_grad-{name}-{dtype}", ops.corr2d_input_grad.default, (gy, w, list(x.shape[2:]), *config)
            yield f"weight_grad-{name}-{dtype}", ops.corr2d_weight_grad.default, (gy, x, list(w.shape[2:]), *config)
            yield f"bias_grad-{name}-{dtype}", ops.corr2d_bias_grad.default, (gy,)
    # channels_last operands: the fake kernels must predict the real results' strides.
    cl = torch.channels_last
    x = torch.randn(2, 4, 7, 6).to(memory_format=cl).requires_grad_()
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    gy = torch.randn(2, 6, 5, 4).to(memory_format=cl).requires_grad_()
    config = [[1, 1], [0, 0], [1, 1], 2]
    yield "forward-channels_last", ops.corr2d_forward.default, (x, w, None, *config)
    yield "input_grad-channels_last", ops.corr2d_input_grad.default, (gy, w, [7, 6], *config)
    yield "weight_grad-channels_last", ops.corr2d_weight_grad.default, (gy, x, [3, 3], *config)


SAMPLES = list(op_samples())


@pytest.mark.parametrize("op, args", [s[1:] for s in SAMPLES], ids=[s[0] for s in SAMPLES])
def test_opcheck(op, args):
    torch.library.opcheck(op, args)
