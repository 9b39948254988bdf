"""Per-sample gradients with torch.func (the building block of differential privacy): vmap(grad(...)) over a
small CNN on scikit-learn's handwritten digits, with torchcorr's Corr2d layers and with nn.Conv2d.

    python examples/per_sample_grads.py            # --batch-size, --seed

Each image's own gradient of its loss, for every parameter, in one batched call. Checks, in float64, that
torchcorr's per-sample gradients equal a loop of one backward pass per image and the nn.Conv2d model's
per-sample gradients from the same weights, then times both models' vmap(grad(...)) side by side (float32).
main() returns 0 when every check passes.
"""

import argparse
import sys

import torch
import torch.nn.functional as F
import torch.utils.benchmark as benchmark
from torch import nn
from torch.func import functional_call, grad, vmap

import torchcorr


def cnn():
    """Two 3x3 convolutions on the 8x8 digits, then a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def digits(batch_size, seed):
    from sklearn.datasets import load_digits

    data = load_digits()
    order = torch.randperm(len(data.target), generator=torch.Generator().manual_seed(seed))[:batch_size]
    x = torch.tensor(data.images, dtype=torch.float32)[order, None] / 16.0
    return x, torch.tensor(data.target)[order]


def per_sample_gradients(model):
    """A function of (params, x, y) giving every parameter's gradient for each image, stacked over images."""

    def loss(params, xi, yi):
        return F.cross_entropy(functional_call(model, params, (xi[None],)), yi[None])

    return vmap(grad(loss), in_dims=(None, 0, 0))


def looped_gradients(model, params, x, y):
    """The same, one backward pass per image."""
    per_image = []
    for xi, yi in zip(x, y):
        leaves = {name: p.detach().requires_grad_() for name, p in params.items()}
        loss = F.cross_entropy(functional_call(model, leaves, (xi[None],)), yi[None])
        per_image.append(dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())))))
    return {name: torch.stack([g[name] for g in per_image]) for name in params}


def max_difference(a, b):
    return max((a[name] - b[name]).abs().max().item() for name in a)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per model")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    reference = cnn()
    ours = torchcorr.convert(reference)  # the same weights, torchcorr's kernels
    x, y = digits(args.batch_size, args.seed)

    # Exactness, in float64.
    reference64, ours64 = reference.double(), ours.double()
    params64 = {name: p.detach() for name, p in ours64.named_parameters()}
    got = per_sample_gradients(ours64)(params64, x.double(), y)
    looped = looped_gradients(ours64, params64, x.double(), y)
    theirs = per_sample_gradients(reference64)(params64, x.double(), y)
    checks = {
        "torchcorr vmap(grad) == one backward per image": max_difference(got, looped),
        "torchcorr vmap(grad) == nn.Conv2d vmap(grad)": max_difference(got, theirs),
    }
    ok = True
    for name, difference in checks.items():
        passed = difference < 1e-10
        ok &= passed
        print(f"  {'PASS' if passed else 'FAIL'}  {name}  (largest difference {difference:.1e})")

    # Speed, in float32: both models' per-sample gradients of the same batch.
    reference32, ours32 = reference.float(), ours.float()
    times = {}
    for label, model in (("nn.Conv2d", reference32), ("torchcorr", ours32)):
        params = {name: p.detach() for name, p in model.named_parameters()}
        fn = per_sample_gradients(model)
        timer = benchmark.Timer("fn(params, x, y)", globals=dict(fn=fn, params=params, x=x, y=y),
                                num_threads=torch.get_num_threads())
        times[label] = timer.blocked_autorange(min_run_time=args.min_run_time).median * 1e3
    print(f"\nper-sample gradients of {args.batch_size} digits, float32, {torch.get_num_threads()} threads:")
    for label, ms in times.items():
        print(f"  {label:10s} {ms:8.2f} ms")
    print(f"  speedup    {times['nn.Conv2d'] / times['torchcorr']:8.2f}x  (nn.Conv2d time / torchcorr time)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
