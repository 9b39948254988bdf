"""Bar chart of the CPU benchmark's speedups (torch time / torchcorr time), drawn from its JSON report.

    python bench/plot.py bench/results/cpu.json              # writes bench/results/cpu_speedups.png
    python bench/plot.py bench/results/cpu.json --out chart.png

One pair of horizontal bars per shape (fwd, fwd+bwd) on a log axis, weak shapes above dense ones, with
a line at 1x and, over each kind's bars, its targets in the colour of their task: dashed for a geometric
mean, dotted for every shape.
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.lines import Line2D  # noqa: E402

# (fwd, fwd+bwd) colours per kind
COLORS = {"weak": ("#f08a24", "#b2182b"), "dense": ("#4ba3d9", "#08306b")}
TASKS = ["fwd", "fwd+bwd"]
BAR = 0.38


def plot_speedups(report, path):
    rows = sorted(report["rows"], key=lambda row: list(COLORS).index(row["kind"]))  # stable: suite order kept
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.34 * len(rows)))

    positions, y = [], 0.0  # one per row, top to bottom
    for i, row in enumerate(rows):
        if i and row["kind"] != rows[i - 1]["kind"]:
            y += 0.8  # a gap between the kinds
        positions.append(y)
        y += 1
    for y, row in zip(positions, rows):
        for offset, task, color in zip((-BAR / 2, BAR / 2), TASKS, COLORS[row["kind"]]):
            ax.barh(y + offset, row[f"speedup {task}"], height=BAR, color=color)

    for kind in COLORS:
        ys = [y for y, row in zip(positions, rows) if row["kind"] == kind]
        for target in (t for t in report["targets"] if t["kind"] == kind):
            color = COLORS[kind][TASKS.index(target["task"])]
            style = "--" if target["statistic"] == "geomean" else ":"
            ax.vlines(target["threshold"], min(ys) - 0.5, max(ys) + 0.5, colors=color, linestyles=style,
                      lw=1.8, zorder=3)
    ax.axvline(1, color="black", lw=1)

    ax.set_xscale("log")
    ax.set_yticks(positions, [row["shape"] + (" *" if row["suite"] == "baseline" else "") for row in rows],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup = torch time / torchcorr time (log scale; > 1: torchcorr is faster)")
    ax.grid(axis="x", which="both", alpha=0.25)
    machine = report["machine"]
    ax.set_title(f"torchcorr vs torch F.conv2d, CPU float32: {machine['cpu']}, {machine['threads']} threads\n"
                 f"torch {machine['torch']}, {machine['cpu_isa']}, {machine['date']}   (* = BASELINES.md shape)",
                 fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[kind][i], label=f"{kind} {task}")
               for kind in COLORS for i, task in enumerate(TASKS)]
    handles += [Line2D([], [], color="gray", ls="--", label="target for the geomean of the kind"),
                Line2D([], [], color="gray", ls=":", label="target for every shape of the kind")]
    ax.legend(handles=handles, fontsize=7, loc="best")

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="report written by bench/bench_cpu.py (--out)")
    parser.add_argument("--out", help="PNG to write (default: next to the JSON, NAME_speedups.png)")
    args = parser.parse_args()
    out = args.out or os.path.splitext(args.json)[0] + "_speedups.png"
    with open(args.json) as f:
        plot_speedups(json.load(f), out)
    print(f"chart written to {out}")


if __name__ == "__main__":
    main()
