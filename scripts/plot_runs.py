"""Plots validation perplexity against minutes of training for runs, from their metrics.json.

    .venv/bin/pip install -r requirements-plot.txt     # matplotlib, the one extra it needs
    .venv/bin/python scripts/plot_runs.py runs/small runs/medium --out=docs/curves.png
    .venv/bin/python scripts/plot_runs.py runs/small runs/medium --table   # no matplotlib

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
    """(label, metrics dict) of LABEL=PATH or PATH (a save_path or a metrics.json); a spec
    that exists is a PATH, even with a "=" in it (runs/lr=0.5)."""
    label, sep, path = spec.partition("=")
    if not sep or os.path.exists(spec):
        label, path = "", spec
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    try:
        with open(path) as f:
            metrics = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read {path}: {e}; pass a save_path of a run")
    problem = _malformed(metrics)
    if problem:
        raise SystemExit(f"error: {path} is not a run's metrics.json ({problem}); pass the "
                         f"save_path of a run of ptb_word_lm.py")
    label = label or os.path.basename(os.path.dirname(os.path.abspath(path)))
    return label, metrics


def _malformed(metrics):
    """What keeps `metrics` from being a run's metrics.json, or None."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("epochs"), list):
        return "no list of epochs"
    for number, epoch in enumerate(metrics["epochs"], 1):
        if not isinstance(epoch, dict):
            return f"epoch entry {number} is not an object"
        for key, nullable in (("train_seconds", False), ("valid_perplexity", True)):
            value = epoch.get(key)  # a non-finite perplexity is written as null
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (is_number or nullable and value is None):
                return f"epoch entry {number} has no number {key}"
    return None


def summary(metrics):
    """(minutes of training, epochs trained, last validation and test perplexity) of a run;
    a partial last epoch (stopped by --max_minutes) counts as its fraction."""
    epochs = metrics["epochs"]
    minutes = sum(epoch["train_seconds"] for epoch in epochs) / 60.0
    trained = sum(epoch.get("fraction", 1.0) for epoch in epochs)
    valid = epochs[-1]["valid_perplexity"] if epochs else None
    return minutes, trained, valid, metrics.get("test_perplexity")


def table(runs):
    """Markdown: one row per run with its parameters, minutes, epochs and perplexities."""
    def cell(value, fmt):
        return "–" if value is None else fmt.format(value)
    rows = ["| run | parameters | minutes | epochs | valid ppl | test ppl |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, metrics in runs:
        minutes, epochs, valid, test = summary(metrics)
        rows.append(f"| {label} | {cell(metrics.get('parameters'), '{:,}')} | {minutes:.1f} "
                    f"| {epochs:.2f} | {cell(valid, '{:.2f}')} | {cell(test, '{:.2f}')} |")
    return "\n".join(rows)


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
    tmp = f"{out}.tmp"
    try:  # a temporary renamed over `out`: a kill never leaves half a PNG
        fig.savefig(tmp, dpi=120, format="png")
        os.replace(tmp, out)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise SystemExit(f"error: cannot write {out}: {e.strerror}; pass --out in a "
                         f"writable directory")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="save_path, metrics.json or LABEL=PATH")
    parser.add_argument("--out", default="curves.png", help="PNG to write")
    parser.add_argument("--title", default="PTB: validation perplexity against training time")
    parser.add_argument("--table", action="store_true",
                        help="print a Markdown table of the runs instead of plotting")
    args = parser.parse_args(argv)
    runs = [read_run(spec) for spec in args.runs]
    if args.table:
        print(table(runs))
        return 0
    plot(runs, args.out, args.title)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
