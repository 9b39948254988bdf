"""LeNet with torchcorr layers under DistributedDataParallel: 2 CPU processes give the same model as 1.

    python examples/ddp_lenet.py             # --steps, --batch-size, --lr to change

Two processes, started with torch.multiprocessing.spawn, join a gloo process group over the loopback
interface (127.0.0.1, a free port). Each trains the LeNet of examples/lenet.py (torchcorr's Corr2d layers,
float64) with plain SGD on its half of every global batch of digits; DDP averages their gradients. A
single process trains the same model from the same weights on the full batches. With a mean-reduced loss
and halves of equal size, the full batch's gradient is the average of the two halves' gradients, so after
the last step both runs must hold the same parameters and the same gradients, up to rounding (the sums are
taken in a different order). Prints the largest differences; main() returns 0 when they are within tol.
"""

import argparse
import os
import socket
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import torchcorr
from lenet import init_weights, lenet, load_digits_28

WORLD_SIZE = 2


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loopback_interface():
    names = [name for _, name in socket.if_nameindex()]
    return "lo" if "lo" in names else "lo0"  # Linux, macOS


def make_model(initial_state):
    model = torchcorr.convert(lenet()).double()
    model.load_state_dict(initial_state)
    return model


def train(model, batches, lr):
    """Plain SGD over the batches; the gradients of the last step stay in .grad."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def snapshot(model):
    """{name: (parameter, gradient)} copied out of the model."""
    return {name: (p.detach().clone(), p.grad.clone()) for name, p in model.named_parameters()}


def worker(rank, port, initial_state, batches, lr, result_dir):
    """One DDP process: trains on its half of every batch, saves its parameters and gradients."""
    os.environ["GLOO_SOCKET_IFNAME"] = loopback_interface()  # keep gloo's traffic on loopback
    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = make_model(initial_state)
        halves = [(x.chunk(WORLD_SIZE)[rank], y.chunk(WORLD_SIZE)[rank]) for x, y in batches]
        train(DistributedDataParallel(model), halves, lr)
        torch.save(snapshot(model), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def largest_difference(a, b, which):
    """max |a - b| over every parameter (which=0) or gradient (which=1) of two snapshots."""
    return max((a[name][which] - b[name][which]).abs().max().item() for name in a)


def main(steps=5, batch_size=64, lr=0.5, seed=0, tol=1e-12):
    """Train 1 and 2 processes side by side; returns 0 when they agree within tol."""
    if batch_size % WORLD_SIZE:
        raise ValueError(f"batch_size must split evenly over {WORLD_SIZE} processes")
    x_train, y_train, _, _ = load_digits_28(seed)
    used = steps * batch_size
    if used > len(y_train):
        raise ValueError(f"{steps} steps of {batch_size} need {used} digits; there are {len(y_train)}")
    batches = list(zip(x_train[:used].double().split(batch_size), y_train[:used].split(batch_size)))
    with torch.random.fork_rng(devices=[]):  # a fixed initialisation that leaves the caller's RNG alone
        torch.manual_seed(seed)
        initial_state = init_weights(lenet()).double().state_dict()

    single = make_model(initial_state)
    train(single, batches, lr)
    single = snapshot(single)

    port = free_port()
    print(f"{steps} SGD steps of {batch_size} digits (float64): 1 process on full batches, and "
          f"{WORLD_SIZE} DDP processes (gloo, 127.0.0.1:{port}) on {batch_size // WORLD_SIZE} each")
    with tempfile.TemporaryDirectory() as result_dir:
        mp.spawn(worker, args=(port, initial_state, batches, lr, result_dir), nprocs=WORLD_SIZE)
        ranks = [torch.load(os.path.join(result_dir, f"rank{rank}.pt")) for rank in range(WORLD_SIZE)]

    parameter_gap = largest_difference(single, ranks[0], 0)
    gradient_gap = largest_difference(single, ranks[0], 1)
    ranks_gap = max(largest_difference(ranks[0], ranks[1], which) for which in (0, 1))
    moved = largest_difference(single, {name: (p, p) for name, p in initial_state.items()}, 0)
    print(f"parameters moved by up to {moved:.3f} from their initial values")
    print(f"max |1-process - DDP| over the parameters:                  {parameter_gap:.1e}")
    print(f"max |1-process - DDP| over the last step's gradients:        {gradient_gap:.1e}")
    print(f"max |rank 0 - rank 1| over the parameters and gradients:     {ranks_gap:.1e}")
    same = max(parameter_gap, gradient_gap, ranks_gap) <= tol
    print(f"DDP {'matches' if same else 'does NOT match'} the single-process run (tolerance {tol:.0e})")
    return 0 if same else 1


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split over the processes")
    parser.add_argument("--lr", type=float, default=0.5)
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    sys.exit(main(steps=args.steps, batch_size=args.batch_size, lr=args.lr))
