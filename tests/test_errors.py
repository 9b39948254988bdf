"""Bad input gets a clear Python exception naming the problem, from every entry point."""

import pytest
import torch

import torchcorr
from torchcorr import reference

ops = torch.ops.torchcorr
x4 = torch.randn(2, 4, 8, 8)
w4 = torch.randn(6, 2, 3, 3)

# (description, call arguments, exception type, words the message must contain)
BAD_CALLS = [
    ("5-D input", (torch.randn(1, 2, 4, 8, 8), w4), {}, ValueError, "expected a 4-D"),
    ("1-D input", (torch.randn(8), w4), {}, ValueError, "expected a 4-D"),
    ("3-D weight", (x4, torch.randn(6, 4, 3)), {}, ValueError, "4-D weight"),
    ("2-D image, 4-D kernel", (torch.randn(8, 8), w4), {}, ValueError, "2-D kernel"),
    ("channels vs weight", (x4, torch.randn(6, 3, 3, 3)), {}, ValueError, "input channels"),
    ("channels vs groups", (x4, torch.randn(6, 1, 3, 3)), dict(groups=3), ValueError, "divisible by groups"),
    ("out channels vs groups", (x4, torch.randn(5, 2, 3, 3)), dict(groups=2), ValueError, "output channels (5)"),
    ("kernel larger than input", (x4, torch.randn(6, 4, 9, 3)), {}, ValueError, "larger than the padded input"),
    ("dilated kernel too large", (x4, torch.randn(6, 4, 3, 3)), dict(dilation=4), ValueError, "larger than the padded"),
    ("negative padding", (x4, torch.randn(6, 4, 3, 3)), dict(padding=-1), ValueError, "padding must be non-negative"),
    ("zero stride", (x4, torch.randn(6, 4, 3, 3)), dict(stride=(1, 0)), ValueError, "stride must be positive"),
    ("zero dilation", (x4, torch.randn(6, 4, 3, 3)), dict(dilation=0), ValueError, "dilation must be positive"),
    ("zero groups", (x4, torch.randn(6, 4, 3, 3)), dict(groups=0), ValueError, "groups must be positive"),
    ("three strides", (x4, torch.randn(6, 4, 3, 3)), dict(stride=(1, 1, 1)), TypeError, "stride must be an int or a pair"),
    ("float padding", (x4, torch.randn(6, 4, 3, 3)), dict(padding=1.5), TypeError, "padding must be an int"),
    ("unknown padding", (x4, torch.randn(6, 4, 3, 3)), dict(padding="full"), ValueError, "'same', 'valid'"),
    ("same with stride", (x4, torch.randn(6, 4, 3, 3)), dict(padding="same", stride=2), ValueError,
     "padding='same' is not supported for strided"),
    ("dtype mismatch", (x4, torch.randn(6, 4, 3, 3, dtype=torch.float64)), {}, TypeError, "weight has dtype torch.float64"),
    ("integer input", (torch.ones(2, 4, 8, 8, dtype=torch.int64), torch.ones(6, 4, 3, 3, dtype=torch.int64)), {},
     TypeError, "floating-point"),
    ("bool input", (torch.ones(2, 4, 8, 8, dtype=torch.bool), w4), {}, TypeError, "floating-point"),
    ("complex input", (torch.ones(2, 4, 8, 8, dtype=torch.complex64), w4), {}, TypeError, "floating-point"),
    ("not a tensor", ([[1.0, 2.0]], torch.ones(1, 1)), {}, TypeError, "input must be a Tensor"),
    ("bias shape", (x4, torch.randn(6, 4, 3, 3), torch.randn(5)), {}, ValueError, "bias must have shape (6,)"),
    ("bias rank", (x4, torch.randn(6, 4, 3, 3), torch.randn(6, 1)), {}, ValueError, "bias must have shape (6,)"),
    ("bias dtype", (x4, torch.randn(6, 4, 3, 3), torch.randn(6, dtype=torch.float64)), {}, TypeError, "bias has dtype"),
    ("device mismatch", (x4, torch.randn(6, 4, 3, 3, device="meta")), {}, RuntimeError, "weight is on meta"),
    ("padding overflows", (x4, torch.randn(6, 4, 3, 3)), dict(padding=2**62), ValueError, "does not fit in 64 bits"),
    ("float tensor stride", (x4, torch.randn(6, 4, 3, 3)), dict(stride=torch.tensor(2.0)), TypeError,
     "stride must be an int"),
    ("D2L bias", (torch.randn(8, 8), torch.randn(2, 2), torch.randn(2)), {}, ValueError, "bias of shape (1,)"),
]


@pytest.mark.parametrize("fn", [torchcorr.corr2d, torchcorr.conv2d, reference.corr2d])
@pytest.mark.parametrize("description, args, kwargs, error, words", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_is_named(fn, description, args, kwargs, error, words):
    with pytest.raises(error) as raised:
        fn(*args, **kwargs)
    assert words in str(raised.value)


# The ops check their arguments themselves: a direct torch.ops call can never read out of bounds.
BAD_OP_CALLS = [
    ("forward: 3-D input", lambda: ops.corr2d_forward(torch.randn(4, 8, 8), w4, None, [1, 1], [0, 0], [1, 1], 2),
     "input must be 4-D"),
    ("forward: groups", lambda: ops.corr2d_forward(x4, w4, None, [1, 1], [0, 0], [1, 1], 3), "divisible by groups"),
    ("forward: negative padding", lambda: ops.corr2d_forward(x4, w4, None, [1, 1], [-1, 0], [1, 1], 2),
     "padding must be non-negative"),
    ("forward: kernel too large", lambda: ops.corr2d_forward(x4, torch.randn(6, 2, 9, 9), None, [1, 1], [0, 0], [1, 1], 2),
     "larger than the padded input"),
    ("forward: bias", lambda: ops.corr2d_forward(x4, w4, torch.randn(4), [1, 1], [0, 0], [1, 1], 2),
     "one value per output channel"),
    ("forward: integer", lambda: ops.corr2d_forward(x4.long(), w4.long(), None, [1, 1], [0, 0], [1, 1], 2),
     "floating-point"),
    ("input_grad: wrong grad_output", lambda: ops.corr2d_input_grad(torch.randn(2, 6, 5, 5), w4, [8, 8], [1, 1], [0, 0],
                                                                    [1, 1], 2), "grad_output has shape"),
    ("input_grad: negative size", lambda: ops.corr2d_input_grad(torch.randn(2, 6, 6, 6), w4, [-8, 8], [1, 1], [0, 0],
                                                                [1, 1], 2), "input_size"),
    ("weight_grad: wrong grad_output", lambda: ops.corr2d_weight_grad(torch.randn(2, 6, 6, 7), x4, [3, 3], [1, 1],
                                                                      [0, 0], [1, 1], 2), "grad_output has shape"),
    ("weight_grad: zero kernel", lambda: ops.corr2d_weight_grad(torch.randn(2, 6, 6, 6), x4, [0, 3], [1, 1], [0, 0],
                                                                [1, 1], 2), "weight_size"),
    ("weight_grad: dtype", lambda: ops.corr2d_weight_grad(torch.randn(2, 6, 6, 6).double(), x4, [3, 3], [1, 1],
                                                          [0, 0], [1, 1], 2), "dtype"),
    ("bias_grad: 2-D", lambda: ops.corr2d_bias_grad(torch.randn(6, 6)), "grad_output must be 4-D"),
    # a meta operand takes the call to the shape-only kernel, which must refuse it too
    ("forward: meta weight", lambda: ops.corr2d_forward(x4, w4.to("meta"), None, [1, 1], [0, 0], [1, 1], 2),
     "one device"),
    ("forward: meta bias", lambda: ops.corr2d_forward(x4, w4, torch.randn(6, device="meta"), [1, 1], [0, 0],
                                                      [1, 1], 2), "one device"),
    ("input_grad: meta weight", lambda: ops.corr2d_input_grad(torch.randn(2, 6, 6, 6), w4.to("meta"), [8, 8],
                                                              [1, 1], [0, 0], [1, 1], 2), "one device"),
    ("weight_grad: meta input", lambda: ops.corr2d_weight_grad(torch.randn(2, 6, 6, 6), x4.to("meta"), [3, 3],
                                                               [1, 1], [0, 0], [1, 1], 2), "one device"),
]


@pytest.mark.parametrize("call, words", [c[1:] for c in BAD_OP_CALLS], ids=[c[0] for c in BAD_OP_CALLS])
def test_op_checks_its_arguments(call, words):
    with pytest.raises((RuntimeError, ValueError, TypeError)) as raised:
        call()
    assert words in str(raised.value)


def test_inputs_are_never_modified():
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    saved = [t.detach().clone() for t in (x, w, b)]
    y = torchcorr.corr2d(x, w, b, padding="same", groups=2)
    y.backward(torch.randn_like(y))
    for t, original in zip((x, w, b), saved):
        assert torch.equal(t.detach(), original)


def test_tensor_problems_are_judged_by_the_ops_own_checks():
    # The public functions judge only Python values and forms themselves; what is wrong with the tensors is found
    # by the forward op's C++ checks, run under the public function's name: the same words from every entry point.
    w = torch.randn(6, 3, 3, 3)
    with pytest.raises(ValueError) as raised:
        ops.corr2d_forward(x4, w, None, [1, 1], [0, 0], [1, 1], 1)
    op_message = str(raised.value)
    assert op_message.startswith("torchcorr.corr2d_forward: ")
    for fn, name in ((torchcorr.corr2d, "torchcorr.corr2d"), (reference.corr2d, "torchcorr.reference.corr2d")):
        for input in (x4, x4[0]):  # the op's refusal, named again, and the 3-D form
            with pytest.raises(ValueError) as raised:
                fn(input, w)
            assert str(raised.value) == op_message.replace("torchcorr.corr2d_forward", name)
