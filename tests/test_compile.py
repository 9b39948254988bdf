"""torch.compile and torch.export see torchcorr's ops as single graph nodes, with no graph breaks."""

import pytest
import torch
import torch.nn.functional as F

import torchcorr

from conftest import assert_matches, oracle


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torchcorr.nn.Corr2d(3, 8, 3, padding=1)
        self.conv2 = torchcorr.nn.Corr2d(8, 8, 3, stride=2, groups=2, padding="valid")

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))).mean((2, 3))


def loss_and_grads(model, x):
    loss = model(x).square().sum()
    return (loss, *torch.autograd.grad(loss, [x, *model.parameters()]))  # the backward graph is compiled too


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_forward_and_backward(backend):
    torch.manual_seed(0)
    model = SmallNet().double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    for got, want in zip(loss_and_grads(compiled, x), loss_and_grads(model, x)):
        assert_matches(got, want, torch.float64)


@pytest.mark.parametrize("fn", [torchcorr.corr2d, torchcorr.reference.corr2d], ids=["native", "reference"])
def test_compile_fullgraph_under_autocast(fn):
    """The autocast check traces (torch 2.11's Dynamo cannot trace torch.amp.is_autocast_available)."""
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    compiled = torch.compile(lambda x, w: fn(x, w, stride=(2, 1), padding=1), backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compiled(x, w)
        want = F.conv2d(x, w, stride=(2, 1), padding=1)
    assert got.dtype == want.dtype == torch.bfloat16
    assert_matches(got, oracle(x.bfloat16(), w.bfloat16(), None, stride=(2, 1), padding=1), torch.bfloat16)
    assert compiled(x, w).dtype == torch.float32  # and outside autocast, the operands' own dtype


def test_compiled_autograd_traces_the_backward():
    """torch._dynamo's compiled autograd takes the backward of plain eager calls (the ops' eager autograd is a
    torch::autograd::Function, which it runs as an opaque step of its graph)."""
    from torch._dynamo import compiled_autograd

    torch.manual_seed(0)
    model = SmallNet().double()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, requires_grad=True)
    expected = loss_and_grads(model, x)[1:]
    torch._dynamo.reset()
    with compiled_autograd._enable(torch.compile(backend="aot_eager")):
        model(x).square().sum().backward()
    for got, want in zip([x.grad, *(p.grad for p in model.parameters())], expected):
        assert_matches(got, want, torch.float64)


def test_compile_dynamic_shapes():
    torch.manual_seed(0)
    weight = torch.randn(4, 2, 3, 3)

    @torch.compile(backend="aot_eager", fullgraph=True, dynamic=True)
    def corr(x):
        return torchcorr.corr2d(x, weight, padding=1, stride=2)

    for size in (9, 14, 21):
        x = torch.randn(2, 2, size, size + 3)
        assert_matches(corr(x), F.conv2d(x, weight, padding=1, stride=2), torch.float32)


def test_compile_gradient_ops_and_their_gradients():
    """The gradient ops compile too, with their own backward (what double backward is made of)."""
    torch.manual_seed(0)
    ops = torch.ops.torchcorr
    gy = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 2, 7, 7, dtype=torch.float64, requires_grad=True)

    def adjoints(gy, w, x):
        gx = ops.corr2d_input_grad(gy, w, [7, 7], [1, 1], [0, 0], [1, 1], 1)
        gw = ops.corr2d_weight_grad(gy, x, [3, 3], [1, 1], [0, 0], [1, 1], 1)
        return gx.square().sum() + gw.square().sum() + ops.corr2d_bias_grad(gy).square().sum()

    compiled = torch.compile(adjoints, backend="aot_eager", fullgraph=True)
    got = torch.autograd.grad(compiled(gy, w, x), (gy, w, x))
    want = torch.autograd.grad(adjoints(gy, w, x), (gy, w, x))
    for g, h in zip(got, want):
        assert_matches(g, h, torch.float64)


def test_export_shows_torchcorr_ops():
    torch.manual_seed(0)
    model = SmallNet().eval()
    x = torch.randn(2, 3, 12, 12)
    exported = torch.export.export(model, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert targets.count("torchcorr.corr2d_forward.default") == 2
    assert not any("convolution" in target for target in targets)
    assert_matches(exported.module()(x), model(x), torch.float32)


def test_meta_tensors_give_shapes():
    x = torch.empty(4, 6, 20, 30, device="meta")
    w = torch.empty(8, 3, 5, 3, device="meta")
    y = torchcorr.corr2d(x, w, stride=(2, 1), padding=(2, 0), dilation=(1, 2), groups=2)
    assert y.device.type == "meta"
    assert y.shape == F.conv2d(torch.empty(x.shape), torch.empty(w.shape), stride=(2, 1), padding=(2, 0),
                               dilation=(1, 2), groups=2).shape
