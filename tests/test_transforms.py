"""torch.func transforms through torchcorr, against F.conv2d under the same transform, in float64."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import torchcorr

from conftest import Problem, assert_matches

# Stride, padding, dilation, groups and a bias: every argument of the ops takes part.
PROBLEMS = {
    "grouped_strided": Problem(2, 4, 7, 6, 6, 3, 2, (2, 1), (1, 1), (1, 2), 2, True),
    "depthwise": Problem(2, 3, 5, 5, 3, 3, 3, (1, 1), (1, 1), (1, 1), 3, True),
    "dense_no_bias": Problem(1, 2, 5, 6, 3, 2, 3, (1, 1), (0, 1), (1, 1), 1, False),
}


def both(problem):
    """(torchcorr's function, F.conv2d's) of (x, w, b), and the tensors."""
    config = problem.config()
    x, w, b = problem.tensors(generator=torch.Generator().manual_seed(3))
    if b is None:
        b = torch.zeros(w.shape[0], dtype=w.dtype)  # the functions below always take one
        return (lambda x, w, b: torchcorr.corr2d(x, w, None, **config),
                lambda x, w, b: F.conv2d(x, w, None, **config)), (x, w, b)
    return (lambda x, w, b: torchcorr.corr2d(x, w, b, **config),
            lambda x, w, b: F.conv2d(x, w, b, **config)), (x, w, b)


def assert_same(got, want):
    for g, e in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        assert g.shape == e.shape
        assert_matches(g, e, torch.float64)


def loss(fn):
    return lambda x, w, b: fn(x, w, b).square().sum()


@pytest.mark.parametrize("name", PROBLEMS)
def test_grad_vjp_jvp(name):
    (ours, theirs), args = both(PROBLEMS[name])
    assert_same(grad(loss(ours), argnums=(0, 1, 2))(*args), grad(loss(theirs), argnums=(0, 1, 2))(*args))
    out, pullback = vjp(ours, *args)
    out_t, pullback_t = vjp(theirs, *args)
    cotangent = torch.randn_like(out_t)
    assert_same((out, pullback(cotangent)), (out_t, pullback_t(cotangent)))
    tangents = tuple(torch.randn_like(a) for a in args)
    primal, tangent = jvp(ours, args, tangents)
    assert tangent.norm() > 0
    assert_same((primal, tangent), jvp(theirs, args, tangents))
    for i in range(3):  # one tangent at a time, the bias alone included
        only = tuple(t if j == i else torch.zeros_like(t) for j, t in enumerate(tangents))
        assert_same(jvp(ours, args, only), jvp(theirs, args, only))


@pytest.mark.parametrize("name", PROBLEMS)
def test_jacobians_and_hessian(name):
    (ours, theirs), args = both(PROBLEMS[name])
    assert_same(jacrev(ours, argnums=(0, 1, 2))(*args), jacrev(theirs, argnums=(0, 1, 2))(*args))
    assert_same(jacfwd(ours, argnums=(0, 1))(*args), jacfwd(theirs, argnums=(0, 1))(*args))
    x, w, b = args
    # the loss is quadratic: its Hessians in x and w are those of F.conv2d, and the mixed one couples both
    assert_same(hessian(loss(ours), argnums=(0, 1))(x, w, b), hessian(loss(theirs), argnums=(0, 1))(x, w, b))


@pytest.fixture
def no_vmap_fallback():
    """vmap must use torchcorr's batching rules, never torch's slow per-sample fallback (which warns)."""
    torch._C._functorch._set_vmap_fallback_warning_enabled(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*performance drop.*")
            yield
    finally:
        torch._C._functorch._set_vmap_fallback_warning_enabled(False)


@pytest.mark.parametrize("in_dims", [(0, None, None), (None, 0, None), (None, None, 0), (0, 0, None), (1, 0, 0)])
@pytest.mark.parametrize("name", PROBLEMS)
def test_vmap(name, in_dims, no_vmap_fallback):
    (ours, theirs), (x, w, b) = both(PROBLEMS[name])
    size = 3
    batched = [torch.stack([t + i for i in range(size)], dim=d) if d is not None else t
               for t, d in zip((x, w, b), in_dims)]
    assert_same(vmap(ours, in_dims)(*batched), vmap(theirs, in_dims)(*batched))
    # nested: an outer batch of the same
    outer = [torch.stack([t, 2 * t], dim=0) if d is not None else t for t, d in zip(batched, in_dims)]
    outer_dims = tuple(0 if d is not None else None for d in in_dims)
    assert_same(vmap(vmap(ours, in_dims), outer_dims)(*outer), vmap(vmap(theirs, in_dims), outer_dims)(*outer))


@pytest.mark.parametrize("name", PROBLEMS)
def test_per_sample_gradients(name, no_vmap_fallback):
    """vmap of grad over the images: each image's own weight and bias gradients."""
    (ours, theirs), (x, w, b) = both(PROBLEMS[name])

    def per_sample(fn):
        return vmap(grad(lambda xi, w, b: fn(xi[None], w, b).square().sum(), argnums=(1, 2)), (0, None, None))

    got = per_sample(ours)(x, w, b)
    assert_same(got, per_sample(theirs)(x, w, b))
    loop = [grad(loss(ours), argnums=(1, 2))(x[i:i + 1], w, b) for i in range(x.shape[0])]
    assert_same(got, tuple(torch.stack(parts) for parts in zip(*loop)))


def test_raw_ops_under_grad_and_jvp():
    """The raw ops themselves under grad, jvp and hessian-vector products, against F.conv2d's."""
    problem = PROBLEMS["grouped_strided"]
    x, w, b = problem.tensors(generator=torch.Generator().manual_seed(6))
    config = problem.config()
    ops = torch.ops.torchcorr
    raw = [list(problem.stride), list(problem.padding), list(problem.dilation), problem.groups]

    def ours(x, w):
        y = ops.corr2d_forward(x, w, b, *raw)
        gx = ops.corr2d_input_grad(y, w, list(x.shape[2:]), *raw)  # every op in the chain
        return (ops.corr2d_weight_grad(y, gx, list(w.shape[2:]), *raw).square().sum()
                + ops.corr2d_bias_grad(y).square().sum())

    def theirs(x, w):
        y = F.conv2d(x, w, b, **config)
        gx = torch.nn.grad.conv2d_input(x.shape, w, y, **config)
        return (torch.nn.grad.conv2d_weight(gx, w.shape, y, **config).square().sum()
                + y.sum((0, 2, 3)).square().sum())

    assert_same(grad(ours, argnums=(0, 1))(x, w), grad(theirs, argnums=(0, 1))(x, w))
    tangents = (torch.randn_like(x), torch.randn_like(w))
    assert_same(jvp(ours, (x, w), tangents), jvp(theirs, (x, w), tangents))
    assert_same(jvp(grad(ours, argnums=1), (x, w), tangents), jvp(grad(theirs, argnums=1), (x, w), tangents))


def test_raw_ops_under_vmap(no_vmap_fallback):
    """The four ops' batching rules, called directly, against a loop over the batch."""
    problem = PROBLEMS["grouped_strided"]
    x, w, b = problem.tensors(generator=torch.Generator().manual_seed(5))
    config = [list(problem.stride), list(problem.padding), list(problem.dilation), problem.groups]
    ops = torch.ops.torchcorr
    xs, ws = torch.stack([x, -x, 2 * x]), torch.stack([w, w.flip(0), 0.5 * w])
    y = ops.corr2d_forward(x, w, b, *config)
    gys = torch.stack([y, -y, y.square()])
    cases = [
        (lambda x, w: ops.corr2d_forward(x, w, b, *config), (xs, ws)),
        (lambda gy, w: ops.corr2d_input_grad(gy, w, list(x.shape[2:]), *config), (gys, ws)),
        (lambda gy, x: ops.corr2d_weight_grad(gy, x, list(w.shape[2:]), *config), (gys, xs)),
    ]
    for fn, (first, second) in cases:
        for dims in [(0, 0), (0, None), (None, 0)]:
            args = [t if d is not None else t[0] for t, d in zip((first, second), dims)]
            got = vmap(fn, dims)(*args)
            want = torch.stack([fn(*(t[i] if d is not None else t for t, d in zip(args, dims))) for i in range(3)])
            assert_matches(got, want, torch.float64)
    assert_matches(vmap(ops.corr2d_bias_grad)(gys), gys.sum((1, 3, 4)), torch.float64)


def test_module_through_functional_call():
    torch.manual_seed(0)
    layer = torchcorr.nn.Corr2d(3, 4, 3, padding=1, stride=2).double()
    reference = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2).double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    params = dict(layer.named_parameters())

    def objective(module):
        return lambda params, x: functional_call(module, params, (x,)).square().sum()

    assert_same(grad(objective(layer))(params, x), grad(objective(reference))(params, x))


def test_calls_record_the_native_autograd_nodes():
    """Eager calls and calls under transforms alike are recorded in C++ (no Python Function per call): a
    torch::autograd::Function in plain eager, the op's own node under a transform."""
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    y = torchcorr.corr2d(x, torch.randn(3, 2, 3, 3))
    assert "Recorded<torchcorr::(anonymous namespace)::ForwardDerivatives>" in y.grad_fn.name()
    names = []

    def objective(x):
        y = torchcorr.corr2d(x, torch.randn(3, 2, 3, 3))
        names.append(y.grad_fn.name())
        return y.sum()

    grad(objective)(x.detach())
    assert names == ["Corr2dForwardBackward"]
