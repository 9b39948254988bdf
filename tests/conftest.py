"""Shared test helpers: the F.conv2d oracle, random problems, and tolerances per dtype."""

import random
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings

# Property tests (tests/test_properties.py): a fixed, repeatable set in `make test`, a long search in `make fuzz`.
settings.register_profile("default", max_examples=300, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=20000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")


class Problem(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    K: int
    R: int
    S: int
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    bias: bool

    def tensors(self, dtype=torch.float64, requires_grad=False, generator=None):
        def rand(*shape):
            return torch.randn(*shape, dtype=torch.float64, generator=generator).to(dtype).requires_grad_(requires_grad)

        x = rand(self.N, self.C, self.H, self.W)
        w = rand(self.K, self.C // self.groups, self.R, self.S)
        b = rand(self.K) if self.bias else None
        return x, w, b

    def config(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


def random_problem(seed: int, max_batch: int = 3) -> Problem:
    """A small, valid problem drawn from seed: every combination of the options turns up."""
    rng = random.Random(seed)
    groups = rng.choice([1, 1, 1, 2, 3])
    R, S = rng.randint(1, 5), rng.randint(1, 5)
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    dilation = (rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2]))
    padding = (rng.randint(0, 3), rng.randint(0, 3))
    span_h, span_w = dilation[0] * (R - 1) + 1, dilation[1] * (S - 1) + 1
    H = max(1, span_h - 2 * padding[0] + rng.randint(0, 12))
    W = max(1, span_w - 2 * padding[1] + rng.randint(0, 12))
    return Problem(rng.randint(0, max_batch), groups * rng.randint(1, 3), H, W, groups * rng.randint(1, 3),
                   R, S, stride, padding, dilation, groups, rng.random() < 0.7)


def oracle(x, w, b, **config):
    """F.conv2d in float64, the independent reference every result is compared with."""
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), **config)


# (rtol, atol) against the float64 oracle, for values of order one summed over up to ~100 terms.
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def assert_matches(actual, expected, dtype):
    rtol, atol = TOLERANCE[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol * scale)


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
