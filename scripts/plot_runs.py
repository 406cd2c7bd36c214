"""Plots validation perplexity against minutes of training for runs, from their metrics.json.

    .venv/bin/pip install -r requirements-plot.txt     # matplotlib, the one extra it needs
    .venv/bin/python scripts/plot_runs.py runs/small runs/medium --out=docs/curves.png

Each run is a save_path (or its metrics.json); its label is the directory's
name unless given as LABEL=PATH. The x axis is the cumulative `train_seconds`
of the epochs (what --max_minutes budgets: validation and test not counted).
"""

import argparse
import json
import os
import sys


def curve(metrics):
    """[(minutes of training so far, validation perplexity)] after each recorded epoch."""
    points, seconds = [], 0.0
    for epoch in metrics["epochs"]:
        seconds += epoch["train_seconds"]
        points.append((seconds / 60.0, epoch["valid_perplexity"]))
    return points


def read_run(spec):
    """(label, metrics dict) of LABEL=PATH or PATH (a save_path or a metrics.json)."""
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = "", spec
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read {path}: {e}; pass a save_path of a run")
    label = label or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return label, metrics


def plot(runs, out, title):
    """Writes a PNG of every run's curve (and its test perplexity in the legend)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: this script needs matplotlib: "
                         ".venv/bin/pip install -r requirements-plot.txt")
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, metrics in runs:
        minutes, perplexity = zip(*curve(metrics)) if metrics["epochs"] else ((), ())
        test = metrics.get("test_perplexity")
        ax.plot(minutes, perplexity, marker="o", markersize=3,
                label=f"{label} (test {test:.1f})" if test else label)
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("validation perplexity")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="save_path, metrics.json or LABEL=PATH")
    parser.add_argument("--out", default="curves.png", help="PNG to write")
    parser.add_argument("--title", default="PTB: validation perplexity against training time")
    args = parser.parse_args(argv)
    plot([read_run(spec) for spec in args.runs], args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
