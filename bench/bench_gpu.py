"""GPU benchmark: torchcorr.corr2d against torch's own F.conv2d (cuDNN), float32 and bfloat16, bias on.

For every shape of the GPU suite (the GPU table of BASELINES.md), two tasks are timed with
torch.utils.benchmark (its timer synchronises the device), torch and torchcorr in the same run: "fwd"
(forward under torch.no_grad()) and "fwd+bwd" (forward, then the gradients of input, weight and bias).
float32 is strict on both sides: TF32 is off for cuDNN and for matmuls, as torchcorr never uses it.
cuDNN may pick its fastest algorithm per shape (cudnn.benchmark = True); its search runs before timing.
Before a shape is timed, torchcorr's forward and gradients are checked against F.conv2d in float64; the run
aborts if they differ, since timing a wrong result is worthless.

Also timed: each of torchcorr's ops alone (forward, input, weight and bias gradient), and the card's
device-to-device copy bandwidth, against which each forward's fewest bytes (input, weight and output once)
over its time are reported ("fwd % copy": memory-bound forwards should reach 60%).

Prints a compact table (microseconds; speedup = torch time / torchcorr time, above 1: torchcorr is
faster) and geometric means of the speedups, and writes everything to JSON (--out).

    python bench/bench_gpu.py                      # every shape, float32 and bfloat16, a minute or two
    python bench/bench_gpu.py --quick              # a subset
    python bench/bench_gpu.py --shapes lenet_c1 stem_7x7_s2 --dtypes float32
    python bench/bench_gpu.py --show bench/results/gpu.json   # the table of an earlier run (no GPU needed)
"""

import argparse
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
from sizes import forward_gflop, output_size  # bench/sizes.py, beside this script


class Shape(NamedTuple):
    name: str
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
    Shape("d2l_edge_6x8_k1x2", 1, 1, 6, 8, 1, (1, 2)),
    Shape("single_4096_k3", 1, 1, 4096, 4096, 1, (3, 3), padding=1),
    Shape("single_2048_k11", 1, 1, 2048, 2048, 1, (11, 11), padding=5),
    Shape("lenet_c1", 256, 1, 28, 28, 6, (5, 5), padding=2),
    Shape("lenet_c2", 256, 6, 14, 14, 16, (5, 5)),
    Shape("resnet_64x56_k3", 64, 64, 56, 56, 64, (3, 3), padding=1),
    Shape("resnet_128x28_k3", 64, 128, 28, 28, 128, (3, 3), padding=1),
    Shape("resnet_256x14_k3", 64, 256, 14, 14, 256, (3, 3), padding=1),
    Shape("resnet_512x7_k3", 64, 512, 7, 7, 512, (3, 3), padding=1),
    Shape("resnet_down_s2", 64, 64, 56, 56, 128, (3, 3), stride=2, padding=1),
    Shape("pointwise_256to64", 64, 256, 56, 56, 64, (1, 1)),
    Shape("depthwise_128x56", 64, 128, 56, 56, 128, (3, 3), padding=1, groups=128),
    Shape("depthwise_k7_96x56", 64, 96, 56, 56, 96, (7, 7), padding=3, groups=96),
    Shape("stem_7x7_s2", 64, 3, 224, 224, 64, (7, 7), stride=2, padding=3),
]

QUICK_SHAPES = ["d2l_edge_6x8_k1x2", "single_4096_k3", "lenet_c2", "resnet_128x28_k3", "depthwise_128x56",
                "stem_7x7_s2"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LIBRARIES = {"torch": F.conv2d, "torchcorr": torchcorr.corr2d}
TASKS = ["fwd", "fwd+bwd"]
SEED = 0
# Largest relative norm of the difference from the float64 reference. float32 gradients get more room: weight
# and bias gradients sum up to N*P*Q (10^7) terms. bfloat16 results are rounded to 8 bits.
TOLERANCE = {"float32": {"output": 1e-5, "gradient": 1e-4}, "bfloat16": {"output": 1e-2, "gradient": 2e-2}}


# ---- the timed statements: the same code for both libraries ----

def forward(conv, shape, x, w, b):
    with torch.no_grad():
        return conv(x, w, b, shape.stride, shape.padding, 1, shape.groups)


def forward_backward(conv, shape, x, w, b, grad_out):
    y = conv(x, w, b, shape.stride, shape.padding, 1, shape.groups)
    return torch.autograd.grad(y, (x, w, b), grad_out)


# ---- shapes, inputs and the correctness check ----

def make_inputs(shape, dtype):
    """Seeded normal input, weight, bias and output gradient on the GPU; leaves that require grad."""
    gen = torch.Generator(device="cuda").manual_seed(SEED)
    kh, kw = shape.kernel
    p, q = output_size(shape)

    def rand(*size):
        return torch.randn(*size, device="cuda", generator=gen).to(dtype)

    x = rand(shape.n, shape.c_in, shape.h, shape.w)
    w = rand(shape.c_out, shape.c_in // shape.groups, kh, kw)
    b = rand(shape.c_out)
    grad_out = rand(shape.n, shape.c_out, p, q)
    return [t.requires_grad_() for t in (x, w, b)] + [grad_out]


def relative_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def check_correct(shape, dtype_name, x, w, b, grad_out):
    """Abort the run unless torchcorr's forward and gradients match F.conv2d's in float64 on the same inputs.

    float64, so that only torchcorr's rounding is judged: cuDNN's float32 algorithms (Winograd, FFT) may
    themselves be off by more than a direct sum.
    """
    inputs64 = [t.detach().double().requires_grad_(t.requires_grad) for t in (x, w, b, grad_out)]
    expected = [forward(F.conv2d, shape, *inputs64[:3])]
    expected += forward_backward(F.conv2d, shape, *inputs64)
    actual = [forward(torchcorr.corr2d, shape, x, w, b)]
    actual += forward_backward(torchcorr.corr2d, shape, x, w, b, grad_out)
    for what, a, e in zip(("output", "grad input", "grad weight", "grad bias"), actual, expected):
        if a.shape != e.shape or a.dtype != x.dtype:
            sys.exit(f"ABORT: torchcorr {what} is {a.dtype} {tuple(a.shape)}, expected {x.dtype} {tuple(e.shape)} "
                     f"on {shape.name} {dtype_name}")
        error = relative_error(a, e)
        tolerance = TOLERANCE[dtype_name]["output" if what == "output" else "gradient"]
        if not math.isfinite(error) or error > tolerance:
            sys.exit(f"ABORT: torchcorr {what} differs from torch on {shape.name} {dtype_name}: "
                     f"relative error {error:.3g} > {tolerance:g}")
    forward_backward(F.conv2d, shape, x, w, b, grad_out)  # cuDNN's algorithm search, before any timing


# ---- timing ----

def measure_shape(shape, dtype_name, min_run_time):
    """Check, then time both libraries on both tasks; returns {(library, task): Measurement}."""
    x, w, b, grad_out = make_inputs(shape, DTYPES[dtype_name])
    check_correct(shape, dtype_name, x, w, b, grad_out)
    results = {}
    for task in TASKS:
        stmt = "forward(conv, shape, x, w, b)" if task == "fwd" else "forward_backward(conv, shape, x, w, b, grad_out)"
        for library, conv in LIBRARIES.items():
            timer = benchmark.Timer(
                stmt=stmt,
                globals={"forward": forward, "forward_backward": forward_backward, "conv": conv, "shape": shape,
                         "x": x, "w": w, "b": b, "grad_out": grad_out},
                label=f"conv2d on CUDA, {task}", sub_label=f"{shape.name} {dtype_name}", description=library)
            results[library, task] = timer.blocked_autorange(min_run_time=min_run_time)
    return results, measure_ops(shape, x, w, b, grad_out, min_run_time / 2)


OPS = {  # torchcorr's ops alone, on the inputs of the fwd+bwd task
    "forward": "ops.corr2d_forward(x, w, b, st, pd, dl, g)",
    "input grad": "ops.corr2d_input_grad(grad_out, w, x.shape[2:], st, pd, dl, g)",
    "weight grad": "ops.corr2d_weight_grad(grad_out, x, w.shape[2:], st, pd, dl, g)",
    "bias grad": "ops.corr2d_bias_grad(grad_out)",
}


def measure_ops(shape, x, w, b, grad_out, min_run_time):
    """{op: median seconds} for each of torchcorr's ops called directly."""
    config = {"ops": torch.ops.torchcorr, "x": x.detach(), "w": w.detach(), "b": b.detach(), "grad_out": grad_out,
              "st": [shape.stride] * 2, "pd": [shape.padding] * 2, "dl": [1, 1], "g": shape.groups}
    return {op: benchmark.Timer(stmt=stmt, globals=config).blocked_autorange(min_run_time=min_run_time).median
            for op, stmt in OPS.items()}


def copy_bandwidth(gib=1, repeats=20):
    """Device-to-device copy rate in GB/s (bytes read plus bytes written), median of `repeats` copies."""
    src = torch.randn(gib * 2**28, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * gib * 2**30 / sorted(times[3:])[repeats // 2] / 1e9


def forward_bytes(shape, dtype):
    """The fewest bytes a forward moves: input, weight, bias and output, each once."""
    p, q = output_size(shape)
    kh, kw = shape.kernel
    elements = (shape.n * shape.c_in * shape.h * shape.w + shape.c_out * (shape.c_in // shape.groups) * kh * kw
                + shape.c_out + shape.n * shape.c_out * p * q)
    return elements * DTYPES[dtype].itemsize


# ---- reporting ----

def machine_info():
    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": torch.cuda.get_device_name(0),
        "compute_capability": f"{props.major}.{props.minor}",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "torchcorr": torchcorr.__version__,
        "torchcorr_build": torchcorr.build_info(),
        "python": platform.python_version(),
    }


def summary_row(shape, dtype_name, results, op_times, copy_gbs):
    row = {"shape": shape.name, "dtype": dtype_name, "gflop": forward_gflop(shape),
           **{k: v for k, v in shape._asdict().items() if k != "name"}}
    row.update({f"torchcorr {op} us": t * 1e6 for op, t in op_times.items()})
    row["fwd % copy"] = 100 * forward_bytes(shape, dtype_name) / op_times["forward"] / 1e9 / copy_gbs
    for task in TASKS:
        for library in LIBRARIES:
            m = results[library, task]
            row[f"{library} {task} us"] = m.median * 1e6
            row[f"{library} {task} iqr us"] = m.iqr * 1e6
            row[f"{library} {task} runs"] = len(m.times)
        row[f"speedup {task}"] = row[f"torch {task} us"] / row[f"torchcorr {task} us"]
    return row


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def speedup_geomeans(rows):
    """{dtype: {task: geometric mean of the speedups}} over the rows of each dtype."""
    return {dtype: {task: geomean([r[f"speedup {task}"] for r in rows if r["dtype"] == dtype]) for task in TASKS}
            for dtype in sorted({r["dtype"] for r in rows})}


def print_table(rows, means):
    columns = [  # (title, row key, width, format); text left-aligned, numbers right-aligned
        ("shape", "shape", 20, "<"), ("dtype", "dtype", 8, "<"),
        ("torch fwd", "torch fwd us", 10, ">.1f"), ("torchcorr fwd", "torchcorr fwd us", 13, ">.1f"),
        ("speedup", "speedup fwd", 7, ">.2f"),
        ("torch fwd+bwd", "torch fwd+bwd us", 13, ">.1f"),
        ("torchcorr fwd+bwd", "torchcorr fwd+bwd us", 17, ">.1f"), ("speedup", "speedup fwd+bwd", 7, ">.2f"),
        ("in grad", "torchcorr input grad us", 9, ">.1f"), ("w grad", "torchcorr weight grad us", 9, ">.1f"),
        ("fwd % copy", "fwd % copy", 10, ">.1f"),
    ]
    print("  ".join(format(title, fmt[0] + str(width)) for title, _, width, fmt in columns))
    for row in rows:
        print("  ".join(format(row[key], fmt[0] + str(width) + fmt[1:]) for _, key, width, fmt in columns))
    print("times: medians in microseconds; speedup = torch / torchcorr (> 1: torchcorr faster); in grad, w grad:\n"
          "torchcorr's ops alone; fwd % copy: the forward's fewest bytes per second over the copy rate; "
          "geometric means:")
    for dtype, by_task in means.items():
        print(f"  {dtype:<8}: " + ", ".join(f"{task} {v:.2f}x" for task, v in by_task.items()))


def print_header(machine, options):
    print(f"# {machine['gpu']} (sm_{machine['compute_capability'].replace('.', '')}, "
          f"{machine['gpu_memory_gib']} GiB) | torch {machine['torch']} | CUDA {machine['cuda']} | "
          f"cuDNN {machine['cudnn']} | torchcorr {machine['torchcorr']} | copy {machine['copy_gb_s']:.0f} GB/s")
    print(f"# min_run_time {options['min_run_time']:g} s per measurement, TF32 off, cudnn.benchmark on")


def show(path):
    """Print the table of an earlier run from its JSON."""
    with open(path) as f:
        record = json.load(f)
    print_header(record["machine"], record["options"])
    print_table(record["rows"], record["geomean_speedup"])


# ---- command line ----

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a subset of shapes ({', '.join(QUICK_SHAPES)}) and min-run-time 0.1 s")
    parser.add_argument("--shapes", nargs="+", metavar="NAME", choices=[s.name for s in SHAPES],
                        help="shapes to run (default: all, or the quick subset)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timing per measurement (default 0.5; 0.1 with --quick)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "gpu.json"),
                        help="JSON output (default bench/results/gpu.json)")
    parser.add_argument("--show", metavar="JSON", help="print the table of an earlier run and exit")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.show:
        show(args.show)
        return
    if not torch.cuda.is_available():
        sys.exit(f"ABORT: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False); "
                 "nothing to benchmark.")
    if not torchcorr.native_available("cuda"):
        sys.exit("ABORT: torchcorr has no CUDA kernels loaded (build_info: "
                 f"{torchcorr.build_info()}); rebuild with nvcc available.")
    names = args.shapes or (QUICK_SHAPES if args.quick else [s.name for s in SHAPES])
    shapes = [s for s in SHAPES if s.name in names]
    min_run_time = args.min_run_time or (0.1 if args.quick else 0.5)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False

    machine = machine_info()
    machine["copy_gb_s"] = copy_bandwidth()
    options = {"quick": args.quick, "min_run_time": min_run_time, "seed": SEED, "dtypes": args.dtypes,
               "tf32": False, "cudnn_benchmark": True}
    print_header(machine, options)
    print(f"# {len(shapes)} shapes x {len(args.dtypes)} dtypes\n", flush=True)

    start = time.perf_counter()
    rows = []
    for shape in shapes:
        for dtype_name in args.dtypes:
            print(f"  {shape.name} {dtype_name} ...", end="", flush=True)
            shape_start = time.perf_counter()
            results, op_times = measure_shape(shape, dtype_name, min_run_time)
            print(f" {time.perf_counter() - shape_start:.1f} s", flush=True)
            rows.append(summary_row(shape, dtype_name, results, op_times, machine["copy_gb_s"]))
            torch.cuda.empty_cache()
    options["elapsed_s"] = time.perf_counter() - start

    means = speedup_geomeans(rows)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": machine, "options": options, "rows": rows, "geomean_speedup": means}, f, indent=2)
    print(f"\n# {options['elapsed_s']:.1f} s of benchmarking; results written to {args.out}\n")
    print_table(rows, means)


if __name__ == "__main__":
    main()
