"""CPU benchmark: torchcorr.corr2d against torch's own F.conv2d (float32, bias=True), checked against targets.

For every shape of the CPU suite, two tasks are timed with torch.utils.benchmark, torch and torchcorr
in the same run: "fwd" (forward under torch.no_grad()) and "fwd+bwd" (forward, then the gradients of
input, weight and bias). Before a shape is timed, torchcorr's forward and gradients are checked against
torch's; the run aborts if they differ, since timing a wrong result is worthless.

Shapes are tagged by kind: "weak" (what torch's CPU convolution handles poorly: single or few channels,
depthwise and grouped, large kernels, tiny problems, odd sizes) or "dense" (ResNet-style 3x3 and 1x1
layers, strided, dilated, the 7x7 stem); and by suite: "baseline" (the shapes of BASELINES.md, on which the
targets were set) or "extra" (more of each kind, so that the targets are not met on those shapes alone).
Single-channel images with "same" zero padding are also filtered by the usual image libraries on the same
2-D numpy image, kernel and bias: OpenCV's cv2.filter2D (at its default thread count) and, for kernels up
to 5x5 (larger ones take ~150 ms; --all-peers times them anyway), SciPy's signal.correlate2d.

The report gives the torch.utils.benchmark Compare tables, a summary of medians and speedups (torch time /
torchcorr time), geometric means and minima per kind, a PASS/MISS line per target (TARGETS and
OPENCV_TARGET below), a JSON file (--out) and a bar chart of the speedups (--plot, drawn by bench/plot.py).

Before timing, glibc's malloc is told to keep freed memory (see steady_malloc): by default it hands
buffers of a few MB straight back to the OS and page-faults them in again on every call, unless some
earlier, larger free happened to raise its threshold; without the fix a shape's time then depends on
which shapes ran before it (on a 2-core EPYC, torch's depthwise forward took ~14 ms when run alone,
~2 ms after the pointwise shape).

On shared, noisy machines the absolute times drift from run to run; the ratios between torch and
torchcorr, measured side by side, are what count.

    python bench/bench_cpu.py                 # full suite, a few minutes
    python bench/bench_cpu.py --quick         # subset, well under a minute
    python bench/bench_cpu.py --shapes lenet_c1 resnet_128x28_k3 --min-run-time 2
    python bench/plot.py bench/results/cpu.json   # redraw the chart from a saved run
"""

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import sys
import time
from typing import NamedTuple

import cv2
import numpy as np
import scipy
import scipy.signal
import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torch.utils import benchmark

import torchcorr
from sizes import forward_gflop, output_size  # bench/sizes.py, beside this script


class Shape(NamedTuple):
    name: str
    kind: str  # "weak": torch is weak at it; "dense": the ordinary CNN layers torch is tuned for
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kernel: tuple  # (kh, kw)
    stride: int | tuple = 1
    padding: int | tuple = 0
    dilation: int | tuple = 1
    groups: int = 1
    suite: str = "extra"  # "baseline": measured in /work/shared/BASELINES.md, where the targets come from


BASELINE_SHAPES = [
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

EXTRA_SHAPES = [
    Shape("single_512_k5", "weak", 1, 1, 512, 512, 1, (5, 5), padding=2),
    Shape("single_odd_333x517_k7", "weak", 1, 1, 333, 517, 1, (7, 7), padding=3),
    Shape("single_1024_k3_s2", "weak", 1, 1, 1024, 1024, 1, (3, 3), stride=2, padding=1),
    Shape("rgb_3to8_128_k3", "weak", 4, 3, 128, 128, 8, (3, 3), padding=1),
    Shape("grouped_128x28_g32", "weak", 8, 128, 28, 28, 128, (3, 3), padding=1, groups=32),
    Shape("depthwise_k7_96x56", "weak", 8, 96, 56, 56, 96, (7, 7), padding=3, groups=96),
    Shape("depthwise_s2_128x56", "weak", 8, 128, 56, 56, 128, (3, 3), stride=2, padding=1, groups=128),
    Shape("depthwise_k5_32x64_m2", "weak", 4, 32, 64, 64, 64, (5, 5), padding=2, groups=32),
    Shape("large_k15_1to4_256", "weak", 1, 1, 256, 256, 4, (15, 15), padding=7),
    Shape("tiny_3to4_9x9_k3", "weak", 2, 3, 9, 9, 4, (3, 3)),
    Shape("odd_5to7_37x41_k5x3", "weak", 3, 5, 37, 41, 7, (5, 3), padding=(2, 1)),
    Shape("resnet_512x7_k3", "dense", 8, 512, 7, 7, 512, (3, 3), padding=1),
    Shape("resnet_64x56_k3_b1", "dense", 1, 64, 56, 56, 64, (3, 3), padding=1),
    Shape("resnet_128x28_k3_b1", "dense", 1, 128, 28, 28, 128, (3, 3), padding=1),
    Shape("resnet_256x14_k3_b1", "dense", 1, 256, 14, 14, 256, (3, 3), padding=1),
    Shape("resnet_512x7_k3_b1", "dense", 1, 512, 7, 7, 512, (3, 3), padding=1),
    Shape("dilated_64x56_d2", "dense", 8, 64, 56, 56, 64, (3, 3), padding=2, dilation=2),
    Shape("pointwise_64to256", "dense", 8, 64, 56, 56, 256, (1, 1)),
    Shape("pointwise_256to512_s2", "dense", 8, 256, 56, 56, 512, (1, 1), stride=2),
]

SHAPES = [s._replace(suite="baseline") for s in BASELINE_SHAPES] + EXTRA_SHAPES

QUICK_SHAPES = ["d2l_edge_6x8_k1x2", "single_1024_k3", "lenet_c1", "lenet_c2",
                "depthwise_128x56", "resnet_128x28_k3"]

KINDS = ["weak", "dense"]
TASKS = ["fwd", "fwd+bwd"]


class Target(NamedTuple):
    kind: str
    task: str
    statistic: str  # "geomean" or "min" of the kind's speedups
    threshold: float  # the statistic must be at least this


# The CPU-performance issue's targets, on speedup = torch time / torchcorr time.
TARGETS = [
    Target("weak", "fwd", "geomean", 2.0),
    Target("weak", "fwd+bwd", "geomean", 3.0),
    Target("weak", "fwd+bwd", "min", 1.5),
    Target("dense", "fwd", "geomean", 0.9),
    Target("dense", "fwd+bwd", "geomean", 0.8),
    Target("dense", "fwd", "min", 0.5),
    Target("dense", "fwd+bwd", "min", 0.5),
]
OPENCV_TARGET = 1.5  # single-channel images: torchcorr forward time <= 1.5 x cv2.filter2D's

SEED = 0
# Largest relative norm of the difference from torch's result. Gradients get more room: weight and bias
# gradients sum up to N*P*Q (10^6) float32 terms, and torch's own result is then off by up to ~5e-5
# from a float64 reference (torchcorr's by less), so 1e-5 would fail on torch's rounding, not a bug.
FORWARD_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 1e-4
SCIPY_MAX_KERNEL = 5  # correlate2d is direct and slow: ~15 ms at 3x3, ~150 ms at 11x11 on 1024x1024


# ---- the timed statements: the same code for both libraries ----

def forward(conv, shape, x, w, b):
    with torch.no_grad():
        return conv(x, w, b, shape.stride, shape.padding, shape.dilation, shape.groups)


def forward_backward(conv, shape, x, w, b, grad_out):
    y = conv(x, w, b, shape.stride, shape.padding, shape.dilation, shape.groups)
    return torch.autograd.grad(y, (x, w, b), grad_out)


LIBRARIES = {"torch": F.conv2d, "torchcorr": torchcorr.corr2d}


# Peers on single-channel images: 2-D float32 numpy image and kernel, scalar bias, zero "same" padding.

def opencv_filter2d(image, kernel, bias):
    return cv2.filter2D(image, -1, kernel, delta=bias, borderType=cv2.BORDER_CONSTANT)


def scipy_correlate2d(image, kernel, bias):
    return scipy.signal.correlate2d(image, kernel, mode="same") + bias


PEERS = {"opencv": opencv_filter2d, "scipy": scipy_correlate2d}


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


# ---- shapes, inputs and the correctness checks ----

def peers_for(shape, all_peers):
    """The peers that compute this shape: single-channel, stride 1, no dilation, odd kernel, "same" padding."""
    kh, kw = shape.kernel
    single_image = (shape.n, shape.c_in, shape.c_out, shape.groups) == (1, 1, 1, 1)
    same = (_pair(shape.stride), _pair(shape.dilation), _pair(shape.padding)) == ((1, 1), (1, 1),
                                                                                  (kh // 2, kw // 2))
    if not (single_image and same and kh % 2 == 1 and kw % 2 == 1):
        return []
    return [peer for peer in PEERS if peer != "scipy" or all_peers or max(kh, kw) <= SCIPY_MAX_KERNEL]


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


def peer_inputs(x, w, b):
    """The first image, kernel and bias as a 2-D numpy image and kernel (sharing memory) and a float."""
    return x[0, 0].detach().numpy(), w[0, 0].detach().numpy(), b[0].item()


def relative_error(actual, expected):
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def check_close(who, what, shape, actual, expected, tolerance):
    """Abort the run unless actual has expected's shape and is within tolerance of it."""
    if actual.shape != expected.shape:
        sys.exit(f"ABORT: {who} {what} has shape {tuple(actual.shape)}, torch {tuple(expected.shape)} "
                 f"on {shape.name}")
    error = relative_error(actual, expected)
    if not math.isfinite(error) or error > tolerance:
        sys.exit(f"ABORT: {who} {what} differs from torch on {shape.name}: "
                 f"relative error {error:.3g} > {tolerance:g}")


def check_correct(shape, x, w, b, grad_out, peers):
    """Abort the run unless torchcorr's forward and gradients, and the peers' outputs, match F.conv2d's."""
    expected = forward(LIBRARIES["torch"], shape, x, w, b)
    check_close("torchcorr", "output", shape, forward(LIBRARIES["torchcorr"], shape, x, w, b), expected,
                FORWARD_TOLERANCE)
    expected_grads = forward_backward(LIBRARIES["torch"], shape, x, w, b, grad_out)
    grads = forward_backward(LIBRARIES["torchcorr"], shape, x, w, b, grad_out)
    for name, actual, expected_grad in zip(("input", "weight", "bias"), grads, expected_grads):
        check_close("torchcorr", f"grad {name}", shape, actual, expected_grad, GRADIENT_TOLERANCE)
    for peer in peers:
        actual = torch.from_numpy(np.asarray(PEERS[peer](*peer_inputs(x, w, b))))
        check_close(peer, "output", shape, actual, expected[0, 0], FORWARD_TOLERANCE)


# ---- timing ----

def make_timer(description, task, shape_name, stmt, **stmt_globals):
    return benchmark.Timer(
        stmt=stmt,
        globals=stmt_globals,
        label=f"conv2d on CPU, float32, {task}",
        sub_label=shape_name,
        description=description,
        num_threads=torch.get_num_threads(),  # peers keep their own pools (cv2.getNumThreads())
    )


def measure_shape(shape, min_run_time, all_peers):
    """Check, then time both libraries on both tasks and the peers on the forward.

    Returns {(library or peer, task): Measurement}.
    """
    x, w, b, grad_out = make_inputs(shape)
    peers = peers_for(shape, all_peers)
    check_correct(shape, x, w, b, grad_out, peers)
    tensors = {"shape": shape, "x": x, "w": w, "b": b, "grad_out": grad_out}
    timers = {}
    for library, conv in LIBRARIES.items():
        timers[library, "fwd"] = make_timer(library, "fwd", shape.name, "forward(conv, shape, x, w, b)",
                                            forward=forward, conv=conv, **tensors)
        timers[library, "fwd+bwd"] = make_timer(library, "fwd+bwd", shape.name,
                                                "forward_backward(conv, shape, x, w, b, grad_out)",
                                                forward_backward=forward_backward, conv=conv, **tensors)
    image, kernel, bias = peer_inputs(x, w, b)
    for peer in peers:
        timers[peer, "fwd"] = make_timer(peer, "fwd", shape.name, "peer(image, kernel, bias)",
                                         peer=PEERS[peer], image=image, kernel=kernel, bias=bias)
    order = [(who, task) for task in TASKS for who in (*LIBRARIES, *PEERS) if (who, task) in timers]
    return {key: timers[key].blocked_autorange(min_run_time=min_run_time) for key in order}


# ---- summary and targets ----

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
        "cpu_isa": torchcorr.build_info().get("cpu_isa") or "reference",
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "malloc": malloc,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews every timing
    }


def summary_row(shape, results):
    row = {"shape": shape.name, "kind": shape.kind, "suite": shape.suite, "gflop": forward_gflop(shape),
           **{k: v for k, v in shape._asdict().items() if k not in ("name", "kind", "suite")}}
    for (who, task), m in results.items():
        row[f"{who} {task} ms"] = m.median * 1e3
        row[f"{who} {task} iqr ms"] = m.iqr * 1e3
        row[f"{who} {task} runs"] = len(m.times)
    for task in TASKS:
        row[f"speedup {task}"] = row[f"torch {task} ms"] / row[f"torchcorr {task} ms"]
    if "opencv fwd ms" in row:
        row["torchcorr/opencv fwd"] = row["torchcorr fwd ms"] / row["opencv fwd ms"]
    return row


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


STATISTICS = {"geomean": geomean, "min": min}


def speedup_stats(rows):
    """Per kind, over all its shapes and over its baseline shapes: count, geomean and min per task."""
    stats = []
    for kind in KINDS:
        kind_rows = [row for row in rows if row["kind"] == kind]
        baseline_rows = [row for row in kind_rows if row["suite"] == "baseline"]
        for suite, chosen in (("all", kind_rows), ("baseline", baseline_rows)):
            if chosen and not (suite == "baseline" and len(chosen) == len(kind_rows)):  # no repeated line
                stats.append({"kind": kind, "suite": suite, "shapes": len(chosen), **{
                    f"{name} {task}": statistic([row[f"speedup {task}"] for row in chosen])
                    for task in TASKS for name, statistic in STATISTICS.items()}})
    return stats


def evaluate_targets(rows):
    """A verdict per target whose shapes ran: {"target", "value", "threshold", "pass", "detail"}."""
    verdicts = []
    for target in TARGETS:
        chosen = [row for row in rows if row["kind"] == target.kind]
        if not chosen:
            continue
        speedups = {row["shape"]: row[f"speedup {target.task}"] for row in chosen}
        value = STATISTICS[target.statistic](speedups.values())
        detail = f"over {len(chosen)} shape{'s' * (len(chosen) > 1)}"
        if target.statistic == "min":
            detail += f", lowest {min(speedups, key=speedups.get)}"
        verdicts.append({"target": f"{target.kind} {target.statistic} speedup {target.task} "
                                   f">= {target.threshold:g}x",
                         **target._asdict(), "value": value, "pass": value >= target.threshold,
                         "detail": detail})
    for row in rows:
        if "torchcorr/opencv fwd" in row:
            value = row["torchcorr/opencv fwd"]
            verdicts.append({"target": f"{row['shape']}: torchcorr fwd <= {OPENCV_TARGET:g}x cv2.filter2D",
                             "kind": "opencv", "shape": row["shape"], "threshold": OPENCV_TARGET,
                             "value": value, "pass": value <= OPENCV_TARGET,
                             "detail": f"{row['torchcorr fwd ms']:.3f} ms vs {row['opencv fwd ms']:.3f} ms"})
    return verdicts


# ---- the printed report ----

def print_table(columns, rows):
    """columns: (title, key, width, format) with format "" for text (left-aligned), else numbers
    (right-aligned, e.g. "{:.3f}"); a missing value prints as "-"."""
    def cell(row, key, width, fmt):
        value = row.get(key)
        text = "-" if value is None else fmt.format(value) if fmt else str(value)
        return text.rjust(width) if fmt else text.ljust(width)

    print("  ".join(title.rjust(width) if fmt else title.ljust(width) for title, _, width, fmt in columns))
    for row in rows:
        print("  ".join(cell(row, key, width, fmt) for _, key, width, fmt in columns))


def print_report(rows, stats, verdicts, selected_count):
    name_width = max(len(row["shape"]) for row in rows)
    task_columns = [(task, [("torch", f"torch {task} ms", 9, "{:.3f}"),
                            ("torchcorr", f"torchcorr {task} ms", 9, "{:.3f}"),
                            ("speedup", f"speedup {task}", 7, "{:.2f}x")]) for task in TASKS]
    left = [("shape", "shape", name_width, ""), ("kind", "kind", 5, ""), ("suite", "suite", 8, ""),
            ("GFLOP", "gflop", 8, "{:.4f}")]
    left_width = sum(width + 2 for *_, width, _ in left) - 2
    print(" " * left_width + "".join(f"  {f' {task} ms ':-^{sum(c[2] + 2 for c in cols) - 2}}"
                                     for task, cols in task_columns))
    print_table(left + [c for _, cols in task_columns for c in cols], rows)

    peer_rows = [row for row in rows if "opencv fwd ms" in row]
    if peer_rows:
        print("\nsingle-channel images, forward ms on the same image, kernel and bias\n"
              "(opencv: cv2.filter2D with BORDER_CONSTANT; scipy: signal.correlate2d 'same'):")
        print_table([("shape", "shape", name_width, ""), ("torchcorr", "torchcorr fwd ms", 9, "{:.3f}"),
                     ("opencv", "opencv fwd ms", 9, "{:.3f}"), ("scipy", "scipy fwd ms", 9, "{:.3f}"),
                     ("torchcorr/opencv", "torchcorr/opencv fwd", 16, "{:.2f}x")], peer_rows)

    print("\nspeedup = torch median / torchcorr median (> 1: torchcorr is faster), per kind:")
    print_table([("kind", "kind", 5, ""), ("shapes", "suite", 8, ""), ("n", "shapes", 3, "{}")] +
                [(f"{name} {task}", f"{name} {task}", len(f"{name} {task}"), "{:.2f}x")
                 for task in TASKS for name in STATISTICS], stats)

    partial = ("" if selected_count == len(SHAPES) else
               f" (on {selected_count} of the suite's {len(SHAPES)} shapes: indicative only)")
    print(f"\ntargets{partial}:")
    target_width = max(len(v["target"]) for v in verdicts)
    for v in verdicts:
        print(f"  {'PASS' if v['pass'] else 'MISS'}  {v['target']:<{target_width}}  {v['value']:6.2f}x  "
              f"({v['detail']})")


def write_json(path, report):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


# ---- command line ----

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset of shapes ({', '.join(QUICK_SHAPES)}) and min-run-time 0.2 s")
    parser.add_argument("--shapes", nargs="+", metavar="NAME", choices=[s.name for s in SHAPES],
                        help="shapes to run (default: all, or the quick subset)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per measurement (default 1.0; 0.2 with --quick)")
    parser.add_argument("--all-peers", action="store_true",
                        help=f"time SciPy on kernels larger than {SCIPY_MAX_KERNEL}x{SCIPY_MAX_KERNEL} too (slow)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc's malloc thresholds alone (timings then depend on shape order)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "cpu.json"),
                        help="JSON output (default bench/results/cpu.json)")
    parser.add_argument("--plot", default=os.path.join(RESULTS, "cpu_speedups.png"),
                        help="PNG chart of the speedups (default bench/results/cpu_speedups.png)")
    parser.add_argument("--no-plot", action="store_true", help="skip the chart")
    return parser.parse_args(argv)


def selected_shapes(args):
    names = args.shapes or (QUICK_SHAPES if args.quick else [s.name for s in SHAPES])
    return [s for s in SHAPES if s.name in names]


def main(argv=None):
    args = parse_args(argv)
    min_run_time = args.min_run_time or (0.2 if args.quick else 1.0)
    shapes = selected_shapes(args)
    if not torchcorr.native_available("cpu"):
        sys.exit("ABORT: torchcorr has no native CPU kernels loaded "
                 f"({torchcorr.build_info().get('error', 'unknown reason')}); nothing to benchmark.")

    malloc = "default (--default-malloc)" if args.default_malloc else steady_malloc()
    machine = machine_info(malloc)
    print(f"# {machine['cpu']} | {machine['threads']} threads | torch {machine['torch']} | "
          f"torchcorr {machine['torchcorr']} ({machine['cpu_isa']}) | "
          f"OpenCV {machine['opencv']} ({machine['opencv_threads']} threads) | {machine['date']} | "
          f"load average {machine['load_average_1min']:.2f}")
    print(f"# {len(shapes)} shapes, min_run_time {min_run_time:g} s per measurement, malloc {malloc}")
    if machine["load_average_1min"] >= os.cpu_count() / 2:
        print("# WARNING: the machine is busy; a parallel call then waits for threads that other processes "
              "hold,\n# so times can be many times too long (both libraries, unevenly): rerun when it is quiet")
    print(flush=True)

    start = time.perf_counter()
    measurements, rows = [], []
    for shape in shapes:
        print(f"  {shape.name} ...", end="", flush=True)
        shape_start = time.perf_counter()
        results = measure_shape(shape, min_run_time, args.all_peers)
        print(f" {time.perf_counter() - shape_start:.1f} s", flush=True)
        measurements += results.values()
        rows.append(summary_row(shape, results))
    elapsed = time.perf_counter() - start

    print()
    compare = benchmark.Compare(measurements)
    compare.trim_significant_figures()  # colours stay off: Compare.colorize() would turn them on
    compare.highlight_warnings()  # "(! N%)": the interquartile range is a large share of the median
    compare.print()

    stats, verdicts = speedup_stats(rows), evaluate_targets(rows)
    print_report(rows, stats, verdicts, len(shapes))
    options = {"quick": args.quick, "min_run_time": min_run_time, "all_peers": args.all_peers, "seed": SEED,
               "dtype": "float32", "shapes": len(shapes), "suite_shapes": len(SHAPES), "elapsed_s": elapsed,
               "load_average_1min_at_end": os.getloadavg()[0]}
    report = {"machine": machine, "options": options, "rows": rows, "speedup_stats": stats,
              "targets": verdicts}
    write_json(args.out, report)
    print(f"\n# {elapsed:.1f} s of benchmarking (load average at the end "
          f"{options['load_average_1min_at_end']:.2f}); results written to {args.out}")
    if not args.no_plot:
        from plot import plot_speedups  # bench/plot.py, next to this script
        plot_speedups(report, args.plot)
        print(f"# chart written to {args.plot}")


if __name__ == "__main__":
    main()
