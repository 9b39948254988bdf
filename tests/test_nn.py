"""torchcorr.nn.Corr2d behaves exactly like nn.Conv2d; Conv2D is the D2L layer; convert swaps models."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import torchcorr
from torchcorr.nn import Conv2D, Corr2d

from conftest import assert_matches

CONFIGS = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2),
    dict(in_channels=6, out_channels=6, kernel_size=5, padding="same", groups=6, bias=False),
    dict(in_channels=2, out_channels=3, kernel_size=(2, 4), padding="same", dilation=2),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding="valid", stride=2),
]
PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def pair(config, padding_mode="zeros", dtype=torch.float64):
    """An nn.Conv2d and a Corr2d built from the same seed."""
    torch.manual_seed(0)
    conv = nn.Conv2d(**config, padding_mode=padding_mode, dtype=dtype)
    torch.manual_seed(0)
    corr = Corr2d(**config, padding_mode=padding_mode, dtype=dtype)
    return conv, corr


@pytest.mark.parametrize("config, padding_mode", [
    (config, mode) for config in CONFIGS for mode in PADDING_MODES
    if mode == "zeros" or config.get("padding", 0) != "valid"  # 'valid' pads nothing, in any mode
])
def test_same_weights_and_same_results(config, padding_mode):
    conv, corr = pair(config, padding_mode)
    assert isinstance(corr, nn.Conv2d)
    for (name, a), (name_b, b) in zip(conv.named_parameters(), corr.named_parameters()):
        assert name == name_b and torch.equal(a, b)
    x = torch.randn(2, config["in_channels"], 11, 9, dtype=torch.float64, requires_grad=True)
    y_conv, y_corr = conv(x), corr(x)
    assert_matches(y_corr, y_conv, torch.float64)
    grad = torch.randn_like(y_conv)
    want = torch.autograd.grad(y_conv, [x, *conv.parameters()], grad)
    got = torch.autograd.grad(y_corr, [x, *corr.parameters()], grad)
    for g, w in zip(got, want):
        assert_matches(g, w, torch.float64)


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_unbatched_input(padding_mode):
    conv, corr = pair(CONFIGS[1], padding_mode)
    x = torch.randn(4, 10, 8, dtype=torch.float64)
    assert corr(x).shape == conv(x).shape
    assert_matches(corr(x), conv(x), torch.float64)


def test_state_dict_loads_both_ways():
    conv, corr = pair(CONFIGS[1])
    torch.manual_seed(1)
    other = nn.Conv2d(**CONFIGS[1], dtype=torch.float64)
    assert list(conv.state_dict()) == list(corr.state_dict())
    corr.load_state_dict(other.state_dict())
    conv.load_state_dict(corr.state_dict())
    for a, b in zip(conv.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)


def test_repr_and_constructor_errors_match_conv2d():
    for config in CONFIGS:
        assert repr(Corr2d(**config)) == repr(nn.Conv2d(**config)).replace("Conv2d", "Corr2d", 1)
    bad = [
        dict(in_channels=3, out_channels=4, kernel_size=3, groups=2),
        dict(in_channels=4, out_channels=3, kernel_size=3, groups=2),
        dict(in_channels=4, out_channels=4, kernel_size=3, groups=0),
        dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", stride=2),
        dict(in_channels=4, out_channels=4, kernel_size=3, padding="full"),
        dict(in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"),
    ]
    for config in bad:
        with pytest.raises(ValueError) as expected:
            nn.Conv2d(**config)
        with pytest.raises(ValueError) as got:
            Corr2d(**config)
        assert str(got.value) == str(expected.value)


def test_meta_device_construction_then_reset_parameters():
    corr = Corr2d(3, 8, 3, device="meta")
    assert corr.weight.device.type == "meta"
    assert corr(torch.empty(2, 3, 10, 10, device="meta")).shape == (2, 8, 8, 8)
    corr = corr.to_empty(device="cpu")
    torch.manual_seed(5)
    corr.reset_parameters()
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 8, 3)
    assert torch.equal(corr.weight, conv.weight) and torch.equal(corr.bias, conv.bias)


def test_float32_module_and_optimizer_step():
    conv, corr = pair(CONFIGS[0], dtype=torch.float32)
    x = torch.randn(4, 3, 12, 12)
    for module in (conv, corr):
        optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
        module(x).square().mean().backward()
        optimizer.step()
    assert_matches(corr.weight, conv.weight, torch.float32)
    assert_matches(corr.bias, conv.bias, torch.float32)


def test_d2l_conv2d_layer():
    torch.manual_seed(0)
    layer = Conv2D((1, 2))
    assert layer.weight.shape == (1, 2) and torch.equal(layer.bias, torch.zeros(1))
    assert 0 <= layer.weight.min() and layer.weight.max() < 1  # torch.rand
    x = torch.randn(6, 8)
    torch.testing.assert_close(layer(x), torchcorr.corr2d(x, layer.weight) + layer.bias)
    assert Conv2D(3).weight.shape == Conv2D(np.int64(3)).weight.shape == (3, 3)
    assert "kernel_size=(1, 2)" in repr(layer)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2),
                                      nn.Conv2d(6, 16, 5, padding_mode="reflect", padding=1), nn.Sigmoid())
        self.head = nn.Conv2d(16, 10, 1, bias=False)

    def forward(self, x):
        return self.head(self.features(x)).mean((2, 3))


def test_convert_replaces_every_conv2d():
    torch.manual_seed(0)
    net = Net().double().eval()
    converted = torchcorr.convert(net)
    assert converted is not net
    assert all(type(m) is nn.Conv2d for m in (net.features[0], net.features[3], net.head))  # untouched
    assert all(type(m) is Corr2d for m in (converted.features[0], converted.features[3], converted.head))
    assert not converted.training
    assert converted.features[3].padding_mode == "reflect"
    for a, b in zip(net.state_dict().values(), converted.state_dict().values()):
        assert torch.equal(a, b)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    assert_matches(converted(x), net(x), torch.float64)


def test_convert_inplace_keeps_the_parameters():
    net = Net()
    parameters = list(net.parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    assert torchcorr.convert(net, inplace=True) is net
    assert type(net.head) is Corr2d
    assert all(a is b for a, b in zip(net.parameters(), parameters))  # the optimizer still holds them
    net(torch.randn(2, 1, 12, 12)).sum().backward()
    optimizer.step()


def test_convert_keeps_hooks_and_spectral_norm():
    torch.manual_seed(0)
    calls = []
    plain = nn.Conv2d(2, 3, 3)
    plain.register_forward_hook(lambda module, inputs, output: calls.append(type(module)))
    net = nn.Sequential(plain, nn.utils.spectral_norm(nn.Conv2d(3, 3, 3))).double().eval()
    x = torch.randn(1, 2, 9, 9, dtype=torch.float64)
    want = net(x)
    assert torchcorr.convert(net, inplace=True) is net
    assert [type(m) for m in net] == [Corr2d, Corr2d]
    assert_matches(net(x), want, torch.float64)
    assert calls == [nn.Conv2d, Corr2d]


def test_convert_a_bare_conv2d_and_leave_subclasses():
    conv = nn.Conv2d(2, 3, 3)
    assert type(torchcorr.convert(conv)) is Corr2d and type(conv) is nn.Conv2d
    corr = Corr2d(2, 3, 3)
    assert torchcorr.convert(corr, inplace=True) is corr
    model = copy.deepcopy(nn.Sequential(nn.Linear(2, 2)))
    assert type(torchcorr.convert(model)[0]) is nn.Linear
