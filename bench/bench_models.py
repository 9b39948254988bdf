"""Whole models: torchvision models converted with torchcorr.convert, against the originals, on the CPU or a GPU.

For each model (random weights, num_classes=100; nothing is downloaded) the converted copy is first checked
in float64: its outputs and every parameter gradient must match the original's, from the same weights and
the same random state (dropout, stochastic depth), or the run aborts. Then both are timed side by side with
torch.utils.benchmark, in float32:
  - inference: eval mode under torch.inference_mode();
  - training step: train mode, forward, cross-entropy loss, backward (gradients set to None before each).
Each is timed in ROUNDS rounds, torch first in one round and torchcorr first in the next (the first model
timed in a process ran 10-15% slower), and each library's time is the median over its rounds.
Ratio = torch time / torchcorr time (above 1: torchcorr is faster).

Then every convolution those models call is timed alone, torch's F.conv2d against torchcorr.corr2d, forward
and forward+backward (gradients of input, weight and bias), and summed per layer class (pointwise 1x1, dense
kxk, depthwise kxk with stride, grouped, stem). Identical calls are timed once and counted.

    python bench/bench_models.py                       # the eight models, batch 8, 224x224
    python bench/bench_models.py --models resnet18 --batch 2 --size 64 --min-run-time 0.2
    python bench/bench_models.py --channels-last       # models and inputs in channels_last, both libraries
    python bench/bench_models.py --device cuda --autocast bfloat16 --no-layers   # on a GPU, under autocast

With --channels-last each model is also timed in NCHW in the same run, both libraries, and the "best layout"
columns compare each library's faster layout: min(torch NCHW, torch channels_last) / min(ours NCHW, ours
channels_last).
"""

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
import torchvision
from torch.utils import benchmark

import torchcorr
from bench_cpu import RESULTS, geomean, machine_info, print_table, steady_malloc, write_json  # beside this script

MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf",
          "shufflenet_v2_x1_0", "squeezenet1_1"]
CLASSES = 100
# float64 error relative to each tensor's largest magnitude (rounding grows through a deep network's batch
# norms), or to PARITY_FLOOR times the model's largest gradient where that is larger
PARITY_TOLERANCE = 1e-8
PARITY_FLOOR = 1e-6
DEVICE = torch.device("cpu")  # --device
AUTOCAST = None               # --autocast: the dtype timed steps run in under torch.autocast


def build(name, memory_format):
    """(original, converted): the same random weights, in float32."""
    torch.manual_seed(0)
    original = torchvision.models.get_model(name, weights=None, num_classes=CLASSES)
    original = original.to(DEVICE, memory_format=memory_format)
    return original, torchcorr.convert(original)


def inputs(batch, size, memory_format, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=generator, dtype=dtype).contiguous(memory_format=memory_format)
    return x.to(DEVICE), torch.randint(0, CLASSES, (batch,), generator=generator).to(DEVICE)


def autocast():
    return torch.autocast(DEVICE.type, dtype=AUTOCAST) if AUTOCAST is not None else contextlib.nullcontext()


def training_step(model, x, target):
    for p in model.parameters():
        p.grad = None
    with autocast():
        loss = F.cross_entropy(model(x), target)
    loss.backward()


def inference(model, x):
    with torch.inference_mode(), autocast():
        return model(x)


# ---- float64 parity: outputs and every parameter gradient ----

def outputs_and_gradients(model, x, target):
    torch.manual_seed(2)  # the same dropout masks for both models
    model.train()
    for p in model.parameters():
        p.grad = None
    out = model(x)
    F.cross_entropy(out, target).backward()
    return [("output", out.detach())] + [(name, p.grad) for name, p in model.named_parameters()]


def check_parity(name, original, converted, batch, size, memory_format):
    """Abort unless the converted model computes the original's outputs and gradients in float64."""
    original, converted = copy.deepcopy(original).double(), copy.deepcopy(converted).double()
    x, target = inputs(batch, size, memory_format, torch.float64)
    expected = outputs_and_gradients(original, x, target)
    # Some gradients are zero but for rounding (a bias followed by a batch norm in training mode): their
    # error is measured against the largest gradient of the model, not against themselves.
    floor = PARITY_FLOOR * max(t.abs().max().item() for what, t in expected[1:] if t is not None and t.numel())
    worst = 0.0
    for (what, want), (_, got) in zip(expected, outputs_and_gradients(converted, x, target)):
        if got is None or want is None:
            if got is not want:
                sys.exit(f"ABORT: {name}: {what} has a gradient in one model only")
            continue
        error = ((got - want).abs().max() / want.abs().max().clamp_min(floor if what != "output" else 1e-30)).item()
        if not math.isfinite(error) or error > PARITY_TOLERANCE:
            sys.exit(f"ABORT: {name}: {what} differs from the original's by {error:.3g} (relative, float64)")
        worst = max(worst, error)
    return worst


# ---- timing ----

def median_ms(stmt, label, sub_label, description, min_run_time, **globals_):
    timer = benchmark.Timer(stmt=stmt, globals=globals_, label=label, sub_label=sub_label,
                            description=description, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


ROUNDS = 4  # rounds per measurement, the order of the two libraries alternating


def time_model(name, original, converted, x, target, min_run_time):
    row = {"model": name}
    for task, stmt, mode in (("inference", "inference(model, x)", "eval"),
                             ("training", "training_step(model, x, target)", "train")):
        times = defaultdict(list)
        for round_ in range(ROUNDS):
            libraries = [("torch", original), ("torchcorr", converted)]
            for library, model in libraries if round_ % 2 == 0 else reversed(libraries):
                getattr(model, mode)()
                times[library].append(median_ms(stmt, "model", name, library, min_run_time / ROUNDS, model=model,
                                                x=x, target=target, inference=inference, training_step=training_step))
        for library, measured in times.items():
            row[f"{library} {task} ms"] = statistics.median(measured)
        row[f"speedup {task}"] = row[f"torch {task} ms"] / row[f"torchcorr {task} ms"]
    return row


def add_best_layout(row, name, args):
    """Time the model in NCHW too and add each library's faster layout to row (its channels_last times)."""
    original, converted = build(name, torch.contiguous_format)
    x, target = inputs(args.batch, args.size, torch.contiguous_format)
    nchw = time_model(name, original, converted, x, target, args.min_run_time)
    for task in ("inference", "training"):
        for library in ("torch", "torchcorr"):
            row[f"{library} NCHW {task} ms"] = nchw[f"{library} {task} ms"]
            row[f"{library} best {task} ms"] = min(nchw[f"{library} {task} ms"], row[f"{library} {task} ms"])
        row[f"best {task}"] = row[f"torch best {task} ms"] / row[f"torchcorr best {task} ms"]


# ---- every convolution the models call, by layer class ----

class ConvCall(tuple):
    """(input shape, out_channels, kernel, stride, padding, dilation, groups, bias): one distinct call."""


def record_calls(model, x):
    """The distinct conv2d calls of one forward pass, with how often each occurs."""
    calls = defaultdict(int)

    def hook(module, args, _):
        calls[ConvCall((tuple(args[0].shape), module.out_channels, module.kernel_size, module.stride,
                        module.padding, module.dilation, module.groups, module.bias is not None))] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return calls


def layer_class(call):
    (_, c_in, _, _), c_out, (kh, kw), stride, _, _, groups, _ = call
    strided = ", stride 2" if max(stride) > 1 else ""
    if c_in == 3 and groups == 1:
        return "stem (3 input channels)"
    if groups == c_in and groups > 1:
        return f"depthwise {kh}x{kw}{strided}"
    if groups > 1:
        return "grouped"
    if (kh, kw) == (1, 1):
        return "pointwise 1x1"
    return f"dense {kh}x{kw}"


def conv_forward(fn, x, w, b, config):
    with torch.no_grad():
        return fn(x, w, b, **config)


def conv_forward_backward(fn, x, w, b, config, grad_out):
    y = fn(x, w, b, **config)
    return torch.autograd.grad(y, (x, w, b) if b is not None else (x, w), grad_out)


def time_call(call, memory_format, min_run_time):
    shape, c_out, kernel, stride, padding, dilation, groups, bias = call
    generator = torch.Generator().manual_seed(3)

    def randn(*size):
        return torch.randn(*size, generator=generator).to(DEVICE).contiguous(memory_format=memory_format)

    x = randn(shape).requires_grad_()
    # the weights in the model's layout too (a model moved to channels_last holds them so)
    w = randn(c_out, shape[1] // groups, *kernel).requires_grad_()
    b = torch.randn(c_out, generator=generator).to(DEVICE).requires_grad_() if bias else None
    config = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_out = randn(F.conv2d(x, w, b, **config).shape)
    times = {}
    for library, fn in (("torch", F.conv2d), ("torchcorr", torchcorr.corr2d)):
        args = dict(fn=fn, x=x, w=w, b=b, config=config, grad_out=grad_out, conv_forward=conv_forward,
                    conv_forward_backward=conv_forward_backward)
        times[f"{library} fwd"] = median_ms("conv_forward(fn, x, w, b, config)", "layer", str(call), library,
                                            min_run_time, **args)
        times[f"{library} fwd+bwd"] = median_ms("conv_forward_backward(fn, x, w, b, config, grad_out)", "layer",
                                                str(call), library, min_run_time, **args)
    return times


def time_layer_classes(models, batch, size, memory_format, min_run_time):
    calls = defaultdict(int)
    for name in models:
        original, _ = build(name, memory_format)
        for call, count in record_calls(original, inputs(batch, size, memory_format)[0]).items():
            calls[call] += count
    totals = defaultdict(lambda: defaultdict(float))
    layers = []
    for i, (call, count) in enumerate(sorted(calls.items(), key=lambda item: layer_class(item[0]))):
        print(f"  layer {i + 1}/{len(calls)}: {layer_class(call)} {call[0]} -> {call[1]} x{count}", flush=True)
        times = time_call(call, memory_format, min_run_time)
        totals[layer_class(call)]["calls"] += count
        for key, value in times.items():
            totals[layer_class(call)][key] += count * value
            totals["all convolutions"][key] += count * value
        totals["all convolutions"]["calls"] += count
        layers.append({"class": layer_class(call), "call": repr(call), "count": count, **times,
                       "speedup fwd": times["torch fwd"] / times["torchcorr fwd"],
                       "speedup fwd+bwd": times["torch fwd+bwd"] / times["torchcorr fwd+bwd"]})
    rows = []
    for name, t in sorted(totals.items(), key=lambda item: (item[0] == "all convolutions", item[0])):
        rows.append({"class": name, "calls": int(t["calls"]), **{k: v for k, v in t.items() if k != "calls"},
                     "speedup fwd": t["torch fwd"] / t["torchcorr fwd"],
                     "speedup fwd+bwd": t["torch fwd+bwd"] / t["torchcorr fwd+bwd"]})
    return rows, layers


# ---- the report ----

def plot(report, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["models"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    positions = range(len(rows))
    for offset, task, color in ((-0.2, "inference", "#4c72b0"), (0.2, "training", "#dd8452")):
        ax.barh([p + offset for p in positions], [row[f"speedup {task}"] for row in rows], height=0.4,
                color=color, label=task)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(list(positions), [row["model"] for row in rows])
    ax.invert_yaxis()
    ax.set_xlabel("speedup = torch time / torchcorr time (> 1: torchcorr is faster)")
    machine = report["machine"]
    where = (f"{machine['gpu']}" if "gpu" in machine else
             f"{machine['cpu']}, {machine['threads']} threads, {machine['cpu_isa']}")
    ax.set_title(f"converted torchvision models, {report.get('device', 'cpu')} {report.get('precision', 'float32')}, "
                 f"batch {report['batch']}, {report['size']}x{report['size']}, {report['layout']}\n{where}, "
                 f"torch {machine['torch']}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, help="torchvision model names (default: the eight)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--parity-batch", type=int, default=2, help="batch of the float64 parity check")
    parser.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing per model measurement")
    parser.add_argument("--layer-min-run-time", type=float, default=0.2, help="seconds per layer measurement")
    parser.add_argument("--channels-last", action="store_true", help="models and inputs in channels_last")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--autocast", choices=["bfloat16", "float16"], default=None,
                        help="time the steps under torch.autocast in this dtype (the parity check stays float64)")
    parser.add_argument("--no-layers", action="store_true", help="skip the per-layer-class table")
    parser.add_argument("--out", default=None, help="JSON output (default bench/results/models[_cl].json)")
    parser.add_argument("--plot", default=None, help="PNG chart (default bench/results/models[_cl].png)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    global DEVICE, AUTOCAST
    DEVICE = torch.device(args.device)
    AUTOCAST = getattr(torch, args.autocast) if args.autocast else None
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no GPU.")
    if not torchcorr.native_available(DEVICE.type):
        sys.exit(f"torchcorr's native {DEVICE.type} kernels are not available; nothing to benchmark.")
    layout = "channels_last" if args.channels_last else "NCHW"
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    suffix = ("_cuda" if args.device != "cpu" else "") + ("_" + args.autocast if args.autocast else "") + (
        "_cl" if args.channels_last else "")
    machine = machine_info(steady_malloc())
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # strict float32 on both
        machine.update(gpu=torch.cuda.get_device_name(DEVICE), cuda=torch.version.cuda,
                       cudnn=torch.backends.cudnn.version())
        print(f"# {machine['gpu']} | CUDA {machine['cuda']} | cuDNN {machine['cudnn']} | TF32 off | "
              f"{args.autocast or 'float32'}")
    print(f"# {machine['cpu']} | {machine['threads']} threads | torch {machine['torch']} | torchvision "
          f"{torchvision.__version__} | torchcorr {machine['torchcorr']} ({machine['cpu_isa']}) | {layout} | "
          f"batch {args.batch}, {args.size}x{args.size} | load average {machine['load_average_1min']:.2f}")

    rows = []
    for name in args.models:
        original, converted = build(name, memory_format)
        error = check_parity(name, original, converted, args.parity_batch, args.size, memory_format)
        x, target = inputs(args.batch, args.size, memory_format)
        row = time_model(name, original, converted, x, target, args.min_run_time)
        row["parity error"] = error
        if args.channels_last:
            add_best_layout(row, name, args)
        rows.append(row)
        best = (f", best layout {row['best inference']:.2f}x / {row['best training']:.2f}x"
                if args.channels_last else "")
        print(f"  {name}: parity {error:.1e}, inference {row['speedup inference']:.2f}x, "
              f"training step {row['speedup training']:.2f}x{best}", flush=True)
    tasks = ("inference", "training")
    means = {"model": "geometric mean", **{f"speedup {t}": geomean([r[f"speedup {t}"] for r in rows]) for t in tasks}}
    if args.channels_last:
        means.update({f"best {t}": geomean([r[f"best {t}"] for r in rows]) for t in tasks})
    print(f"\nWhole models (ratio = torch ms / torchcorr ms; {layout}):")
    print_table([("model", "model", 20, ""), ("torch inf ms", "torch inference ms", 12, "{:.1f}"),
                 ("ours inf ms", "torchcorr inference ms", 11, "{:.1f}"), ("inference", "speedup inference", 9,
                                                                          "{:.2f}x"),
                 ("torch train ms", "torch training ms", 14, "{:.1f}"),
                 ("ours train ms", "torchcorr training ms", 13, "{:.1f}"),
                 ("training", "speedup training", 8, "{:.2f}x")], rows + [means])
    if args.channels_last:
        print("\nEach library's faster layout (NCHW or channels_last, timed in this run; ratio = torch / torchcorr):")
        print_table([("model", "model", 20, ""), ("torch inf", "torch best inference ms", 9, "{:.1f}"),
                     ("ours inf", "torchcorr best inference ms", 8, "{:.1f}"),
                     ("inference", "best inference", 9, "{:.2f}x"),
                     ("torch train", "torch best training ms", 11, "{:.1f}"),
                     ("ours train", "torchcorr best training ms", 10, "{:.1f}"),
                     ("training", "best training", 8, "{:.2f}x")], rows + [means])

    classes, layers = [], []
    if not args.no_layers:
        print("\nEvery convolution of these models, timed alone:")
        classes, layers = time_layer_classes(args.models, args.batch, args.size, memory_format,
                                             args.layer_min_run_time)
        print("\nPer layer class (ms summed over calls; ratio = torch / torchcorr):")
        print_table([("class", "class", 26, ""), ("calls", "calls", 5, "{:d}"),
                     ("torch fwd", "torch fwd", 9, "{:.2f}"), ("ours fwd", "torchcorr fwd", 9, "{:.2f}"),
                     ("fwd", "speedup fwd", 6, "{:.2f}x"), ("torch f+b", "torch fwd+bwd", 9, "{:.2f}"),
                     ("ours f+b", "torchcorr fwd+bwd", 9, "{:.2f}"), ("fwd+bwd", "speedup fwd+bwd", 7, "{:.2f}x")],
                    classes)

    report = {"machine": machine, "device": DEVICE.type, "precision": args.autocast or "float32", "layout": layout,
              "batch": args.batch, "size": args.size,
              "torchvision": torchvision.__version__, "models": rows, "geometric mean": means,
              "layer classes": classes, "layers": layers}
    out = args.out or os.path.join(RESULTS, f"models{suffix}.json")
    write_json(out, report)
    plot(report, args.plot or os.path.join(RESULTS, f"models{suffix}.png"))
    print(f"\nJSON: {out}")
    return report


if __name__ == "__main__":
    main()
