"""CPU benchmark: torchcorr.corr2d against torch's own F.conv2d (float32, bias=True).

For every shape of the CPU suite, two tasks are timed with torch.utils.benchmark, torch and torchcorr
in the same run: "fwd" (forward under torch.no_grad()) and "fwd+bwd" (forward, then the gradients of
input, weight and bias). Before a shape is timed, torchcorr's forward and gradients are checked against
torch's; the run aborts if they differ, since timing a wrong result is worthless.

Shapes are tagged "weak" (shapes torch's CPU convolution handles poorly: the D2L example, single-channel
images, LeNet, depthwise) or "dense" (ResNet-style layers, pointwise, the stem). The report gives the
torch.utils.benchmark Compare table, then a summary of medians, speedups (torch time / torchcorr time)
and their geometric means per kind; everything is also written as JSON (--out).

Before timing, glibc's malloc is told to keep freed memory (see steady_malloc): by default it hands
buffers of a few MB straight back to the OS and page-faults them in again on every call, unless some
earlier, larger free happened to raise its threshold; without the fix a shape's time then depends on
which shapes ran before it (on a 2-core EPYC, torch's depthwise forward took ~14 ms when run alone,
~2 ms after the pointwise shape).

On shared, noisy machines the absolute times drift from run to run; the ratios between torch and
torchcorr, measured side by side, are what count.

    python bench/bench_cpu.py                 # full suite, one to a few minutes
    python bench/bench_cpu.py --quick         # subset, well under a minute
    python bench/bench_cpu.py --shapes lenet_c1 resnet_128x28_k3 --min-run-time 2
"""

import argparse
import ctypes
import json
import math
import os
import platform
import sys
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils import benchmark

import torchcorr


class Shape(NamedTuple):
    name: str
    kind: str  # "weak": torch is weak at it; "dense": the ordinary CNN layers torch is tuned for
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: tuple  # (kh, kw)
    stride: int = 1
    padding: int = 0
    groups: int = 1


SHAPES = [
    Shape("d2l_edge_6x8_k1x2", "weak", 1, 1, 6, 8, 1, (1, 2)),
    Shape("single_1024_k3", "weak", 1, 1, 1024, 1024, 1, (3, 3), padding=1),
    Shape("single_1024_k11", "weak", 1, 1, 1024, 1024, 1, (11, 11), padding=5),
    Shape("lenet_c1", "weak", 64, 1, 28, 28, 6, (5, 5), padding=2),
    Shape("lenet_c2", "weak", 64, 6, 14, 14, 16, (5, 5)),
    Shape("resnet_64x56_k3", "dense", 8, 64, 56, 56, 64, (3, 3), padding=1),
    Shape("resnet_128x28_k3", "dense", 8, 128, 28, 28, 128, (3, 3), padding=1),
    Shape("resnet_256x14_k3", "dense", 8, 256, 14, 14, 256, (3, 3), padding=1),
    Shape("resnet_down_s2", "dense", 8, 64, 56, 56, 128, (3, 3), stride=2, padding=1),
    Shape("pointwise_256to64", "dense", 8, 256, 56, 56, 64, (1, 1)),
    Shape("depthwise_128x56", "weak", 8, 128, 56, 56, 128, (3, 3), padding=1, groups=128),
    Shape("stem_7x7_s2", "dense", 8, 3, 224, 224, 64, (7, 7), stride=2, padding=3),
]

QUICK_SHAPES = ["d2l_edge_6x8_k1x2", "single_1024_k3", "lenet_c1", "lenet_c2",
                "depthwise_128x56", "resnet_128x28_k3"]

LIBRARIES = {"torch": F.conv2d, "torchcorr": torchcorr.corr2d}
TASKS = ["fwd", "fwd+bwd"]
SEED = 0
# Largest relative norm of the difference from torch's result. Gradients get more room: weight and bias
# gradients sum up to N*P*Q (10^6) float32 terms, and torch's own result is then off by up to ~5e-5
# from a float64 reference (torchcorr's by less), so 1e-5 would fail on torch's rounding, not a bug.
FORWARD_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4


# ---- the timed statements: the same code for both libraries ----

def forward(conv, shape, x, w, b):
    with torch.no_grad():
        return conv(x, w, b, shape.stride, shape.padding, 1, shape.groups)


def forward_backward(conv, shape, x, w, b, grad_out):
    y = conv(x, w, b, shape.stride, shape.padding, 1, shape.groups)
    return torch.autograd.grad(y, (x, w, b), grad_out)


# ---- the process: a steady allocator ----

def steady_malloc():
    """Fix glibc's mmap and trim thresholds so large buffers are reused, not re-faulted, on every call.

    glibc adjusts both thresholds on the fly as large blocks are freed, so timings would depend on
    the order the shapes run in. Returns a description for the report.
    """
    if platform.libc_ver()[0] != "glibc":
        return "default (not glibc)"
    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    ok = libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 256 << 20)
    return "glibc: mmap threshold 32 MiB, trim threshold 256 MiB" if ok else "default (mallopt failed)"


# ---- shapes, inputs and the correctness check ----

def output_size(shape):
    kh, kw = shape.kernel
    p = (shape.h + 2 * shape.padding - kh) // shape.stride + 1
    q = (shape.w + 2 * shape.padding - kw) // shape.stride + 1
    return p, q


def forward_gflop(shape):
    """Multiply-adds of the forward, counted as 2 FLOP each: 2*N*C_out*P*Q*(C_in/groups)*kh*kw."""
    p, q = output_size(shape)
    kh, kw = shape.kernel
    return 2 * shape.n * shape.c_out * p * q * (shape.c_in // shape.groups) * kh * kw / 1e9


def make_inputs(shape):
    """Seeded normal float32 input, weight, bias and output gradient; leaves that require grad."""
    gen = torch.Generator().manual_seed(SEED)
    kh, kw = shape.kernel
    p, q = output_size(shape)
    x = torch.randn(shape.n, shape.c_in, shape.h, shape.w, generator=gen)
    w = torch.randn(shape.c_out, shape.c_in // shape.groups, kh, kw, generator=gen)
    b = torch.randn(shape.c_out, generator=gen)
    grad_out = torch.randn(shape.n, shape.c_out, p, q, generator=gen)
    return [t.requires_grad_() for t in (x, w, b)] + [grad_out]


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def check_correct(shape, x, w, b, grad_out):
    """Abort the run unless torchcorr's forward and gradients match F.conv2d's."""
    expected = forward_backward(F.conv2d, shape, x, w, b, grad_out)
    actual = forward_backward(torchcorr.corr2d, shape, x, w, b, grad_out)
    pairs = [("output", forward(torchcorr.corr2d, shape, x, w, b), forward(F.conv2d, shape, x, w, b))]
    pairs += [(f"grad {name}", a, e) for name, a, e in zip(("input", "weight", "bias"), actual, expected)]
    for what, a, e in pairs:
        if a.shape != e.shape:
            sys.exit(f"ABORT: torchcorr {what} has shape {tuple(a.shape)}, torch {tuple(e.shape)} "
                     f"on {shape.name}")
        error = relative_error(a, e)
        tolerance = FORWARD_TOLERANCE if what == "output" else GRADIENT_TOLERANCE
        if not math.isfinite(error) or error > tolerance:
            sys.exit(f"ABORT: torchcorr {what} differs from torch on {shape.name}: "
                     f"relative error {error:.3g} > {tolerance:g}")


# ---- timing ----

def make_timer(library, task, shape, x, w, b, grad_out):
    if task == "fwd":
        stmt = "forward(conv, shape, x, w, b)"
    else:
        stmt = "forward_backward(conv, shape, x, w, b, grad_out)"
    return benchmark.Timer(
        stmt=stmt,
        globals={"forward": forward, "forward_backward": forward_backward, "conv": LIBRARIES[library],
                 "shape": shape, "x": x, "w": w, "b": b, "grad_out": grad_out},
        label=f"conv2d on CPU, float32, {task}",
        sub_label=shape.name,
        description=library,
        num_threads=torch.get_num_threads(),
    )


def measure_shape(shape, min_run_time):
    """Check, then time both libraries on both tasks; returns {(library, task): Measurement}."""
    x, w, b, grad_out = make_inputs(shape)
    check_correct(shape, x, w, b, grad_out)
    results = {}
    for task in TASKS:
        for library in LIBRARIES:
            timer = make_timer(library, task, shape, x, w, b, grad_out)
            results[library, task] = timer.blocked_autorange(min_run_time=min_run_time)
    return results


# ---- reporting ----

def machine_info(malloc):
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or "unknown CPU",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchcorr": torchcorr.__version__,
        "simd": torchcorr.build_info().get("simd", "none"),
        "python": platform.python_version(),
        "malloc": malloc,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews every timing
    }


def summary_row(shape, results):
    row = {"shape": shape.name, "kind": shape.kind, "gflop": forward_gflop(shape),
           **{k: v for k, v in shape._asdict().items() if k not in ("name", "kind")}}
    for task in TASKS:
        for library in LIBRARIES:
            m = results[library, task]
            row[f"{library} {task} ms"] = m.median * 1e3
            row[f"{library} {task} iqr ms"] = m.iqr * 1e3
            row[f"{library} {task} runs"] = len(m.times)
        row[f"speedup {task}"] = row[f"torch {task} ms"] / row[f"torchcorr {task} ms"]
    return row


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def speedup_geomeans(rows):
    """{kind: {task: geometric mean of the speedups}} over the rows of each kind."""
    means = {}
    for kind in sorted({row["kind"] for row in rows}):
        kind_rows = [row for row in rows if row["kind"] == kind]
        means[kind] = {task: geomean([row[f"speedup {task}"] for row in kind_rows]) for task in TASKS}
    return means


def print_summary(rows, means):
    columns = [  # (title, row key, width, format); text left-aligned, numbers right-aligned
        ("shape", "shape", 20, "<"), ("kind", "kind", 5, "<"), ("GFLOP", "gflop", 8, ">.4f"),
        ("torch fwd ms", "torch fwd ms", 12, ">.3f"),
        ("torchcorr fwd ms", "torchcorr fwd ms", 16, ">.3f"),
        ("speedup fwd", "speedup fwd", 11, ">.2f"),
        ("torch fwd+bwd ms", "torch fwd+bwd ms", 16, ">.3f"),
        ("torchcorr fwd+bwd ms", "torchcorr fwd+bwd ms", 20, ">.3f"),
        ("speedup fwd+bwd", "speedup fwd+bwd", 15, ">.2f"),
    ]
    print("  ".join(format(title, fmt[0] + str(width)) for title, _, width, fmt in columns))
    for row in rows:
        print("  ".join(format(row[key], fmt[0] + str(width) + fmt[1:]) for _, key, width, fmt in columns))
    print()
    print("speedup = torch median / torchcorr median (> 1: torchcorr faster); geometric means per kind:")
    for kind, by_task in means.items():
        count = sum(row["kind"] == kind for row in rows)
        print(f"  {kind:<5} ({count} shapes): " + ", ".join(f"{task} {v:.2f}x" for task, v in by_task.items()))


def write_json(path, machine, options, rows, means):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine, "options": options, "rows": rows, "geomean_speedup": means},
                  f, indent=2)


# ---- command line ----

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset of shapes ({', '.join(QUICK_SHAPES)}) and min-run-time 0.2 s")
    parser.add_argument("--shapes", nargs="+", metavar="NAME", choices=[s.name for s in SHAPES],
                        help="shapes to run (default: all, or the quick subset)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per measurement (default 1.0; 0.2 with --quick)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds alone (timings then depend on shape order)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "cpu.json"),
                        help="JSON output (default bench/results/cpu.json)")
    return parser.parse_args()


def selected_shapes(args):
    names = args.shapes or (QUICK_SHAPES if args.quick else [s.name for s in SHAPES])
    return [s for s in SHAPES if s.name in names]


def main():
    args = parse_args()
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    shapes = selected_shapes(args)
    if not torchcorr.native_available("cpu"):
        sys.exit("ABORT: torchcorr has no native CPU kernels loaded "
                 f"({torchcorr.build_info().get('error', 'unknown reason')}); nothing to benchmark.")

    malloc = "default (--default-malloc)" if args.default_malloc else steady_malloc()
    machine = machine_info(malloc)
    print(f"# {machine['cpu']} | {machine['threads']} threads | torch {machine['torch']} | "
          f"torchcorr {machine['torchcorr']} ({machine['simd']}) | "
          f"load average {machine['load_average_1min']:.2f}")
    print(f"# {len(shapes)} shapes, min_run_time {min_run_time:g} s per measurement, malloc {malloc}\n",
          flush=True)

    start = time.perf_counter()
    measurements, rows = [], []
    for shape in shapes:
        print(f"  {shape.name} ...", end="", flush=True)
        shape_start = time.perf_counter()
        results = measure_shape(shape, min_run_time)
        print(f" {time.perf_counter() - shape_start:.1f} s", flush=True)
        measurements += results.values()
        rows.append(summary_row(shape, results))
    elapsed = time.perf_counter() - start

    print()
    compare = benchmark.Compare(measurements)
    compare.trim_significant_figures()  # colours stay off: Compare.colorize() would turn them on
    compare.highlight_warnings()  # "(! N%)": the interquartile range is a large share of the median
    compare.print()

    means = speedup_geomeans(rows)
    print_summary(rows, means)
    options = {"quick": args.quick, "min_run_time": min_run_time, "seed": SEED, "dtype": "float32",
               "elapsed_s": elapsed, "load_average_1min_at_end": os.getloadavg()[0]}
    write_json(args.out, machine, options, rows, means)
    print(f"\n# {elapsed:.1f} s of benchmarking (load average at the end "
          f"{options['load_average_1min_at_end']:.2f}); results written to {args.out}")


if __name__ == "__main__":
    main()
