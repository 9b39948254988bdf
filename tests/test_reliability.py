"""What a library used in long-running, threaded programs must do: concurrent calls from several Python
threads give the serial results, and memory stays flat over thousands of calls."""

import threading

import torch
import torch.nn.functional as F

import torchcorr

from conftest import assert_matches


def forward_backward(x, w, b, config):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = torchcorr.corr2d(*leaves, **config)
    return (y, *torch.autograd.grad(y.square().sum(), leaves))


def test_concurrent_calls_from_python_threads_give_the_serial_results():
    generator = torch.Generator().manual_seed(0)
    cases = []
    for C, K, groups, stride in [(3, 8, 1, 1), (16, 80, 1, 1), (6, 6, 6, 2), (4, 6, 2, 1), (1, 1, 1, 1)]:
        x = torch.randn(2, C, 23, 19, generator=generator)
        w = torch.randn(K, C // groups, 3, 3, generator=generator)
        b = torch.randn(K, generator=generator)
        cases.append((x, w, b, dict(padding=1, stride=stride, groups=groups)))
    serial = [forward_backward(*case) for case in cases]
    results, errors = {}, []

    def work(worker):
        try:
            for repeat in range(5):
                for i, case in enumerate(cases):
                    results[worker, repeat, i] = forward_backward(*case)
        except Exception as error:  # noqa: BLE001 (reported below, from the main thread)
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 4 * 5 * len(cases)
    for (_, _, i), got in results.items():
        assert all(torch.equal(a, e) for a, e in zip(got, serial[i]))
    x, w, b, config = cases[1]
    assert_matches(serial[1][0], F.conv2d(x.double(), w.double(), b.double(), **config), torch.float32)


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_memory_stays_flat_over_thousands_of_calls():
    generator = torch.Generator().manual_seed(1)
    cases = [(torch.randn(2, 4, 12, 12, generator=generator), torch.randn(8, 2, 3, 3, generator=generator),
              torch.randn(8, generator=generator), dict(padding=1, groups=2)),
             (torch.randn(1, 32, 9, 9, generator=generator), torch.randn(96, 32, 1, 1, generator=generator),
              torch.randn(96, generator=generator), dict(stride=2))]
    for _ in range(300):  # warm up: allocator caches, lazily built tables
        for case in cases:
            forward_backward(*case)
    before = resident_bytes()
    for _ in range(2000):
        for case in cases:
            forward_backward(*case)
    grown = resident_bytes() - before
    assert grown < 8 << 20, f"resident memory grew by {grown / 2**20:.1f} MiB over 4000 calls"
