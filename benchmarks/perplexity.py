"""Perplexity tables: trains each config with ptb_word_lm.py, then tabulates its metrics.json.

Each config runs into <root>/<config> (rerunning resumes); the table gives the
final epoch's train/valid perplexity, the exact test one, the training and wall
time and the training words/s.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time

import configs
import errors
import reader
from benchmarks import common

_WALL_FILE = "benchmark_wall.json"  # wall seconds of this script's driver runs, summed over resumes


@dataclasses.dataclass
class Row:
    """One trained run's line of the table."""
    model: str
    epochs: int
    max_epochs: int
    train_perplexity: float | None  # of the last epoch
    valid_perplexity: float | None
    test_perplexity: float | None
    train_seconds: float  # summed over the epochs
    wall_seconds: float | None  # of this script's driver runs, summed over resumes
    train_wps: float | None


def _add_wall_seconds(save_path, seconds):
    path = os.path.join(save_path, _WALL_FILE)
    total = seconds
    if os.path.isfile(path):
        with open(path) as f:
            total += json.load(f).get("wall_seconds", 0.0)
    with open(path, "w") as f:
        json.dump({"wall_seconds": total}, f)


def _read_wall_seconds(save_path):
    path = os.path.join(save_path, _WALL_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("wall_seconds")


def _driver_command(name, save_path, data_path, extra):
    return [sys.executable, os.path.join(common.REPO, "ptb_word_lm.py"), f"--model={name}",
            f"--save_path={save_path}", f"--data_path={data_path}", *extra]


# The flags this tool sets for each run: passed on too, the driver's last one would win
# and train elsewhere, while the table read this tool's directory (another run's numbers).
_OWN_FLAGS = {"model": "--configs", "save_path": "--root", "data_path": "--data_path"}


def _check_passed_on(extra):
    """Raises BenchmarkError if a driver flag passed on is one this tool sets itself."""
    for flag in extra:
        name = flag.lstrip("-").partition("=")[0]
        if name in _OWN_FLAGS:
            raise common.BenchmarkError(f"{flag} is this tool's to set (each run gets "
                                        f"--{name} from {_OWN_FLAGS[name]}); pass "
                                        f"{_OWN_FLAGS[name]} instead")


def run_driver(name, save_path, data_path, extra):
    """Trains config `name` with ptb_word_lm.py (output passed through); True if it succeeded."""
    cmd = _driver_command(name, save_path, data_path, extra)
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.time()
    returncode = subprocess.call(cmd)
    seconds = time.time() - start
    if os.path.isdir(save_path):
        _add_wall_seconds(save_path, seconds)
    if returncode:
        print(f"== {name}: ptb_word_lm.py exited with code {returncode} after {seconds:.0f} s",
              file=sys.stderr, flush=True)
    return returncode == 0


def collect_run(name, save_path, corpus):
    """The table's Row from save_path/metrics.json, or None if there is none.

    Training words/s = epochs * epoch_size * batch_size * num_steps / sum of the
    epochs' train_seconds, an epoch stopped by --max_minutes counted as its
    fraction; epoch_size comes from reader.ptb_producer on `corpus`'s training
    split, which must be the text the run trained on (checked against the
    data_hash in metrics.json, where the run wrote one).
    """
    path = os.path.join(save_path, "metrics.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            metrics = json.load(f)
        config = configs.from_dict(metrics["config"])
        epochs = list(metrics.get("epochs", []))
        train_seconds = sum(e["train_seconds"] for e in epochs)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, errors.UserError) as e:
        raise common.BenchmarkError(f"{path} is not a run's metrics.json "
                                    f"({type(e).__name__}: {errors.first_line(e)})") from None
    if metrics.get("data_hash", corpus.data_hash) != corpus.data_hash:
        raise common.BenchmarkError(f"{path} is of a run on other text than --data_path's: its "
                                    f"words/s would be wrong; pass the --data_path it trained on")
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    trained = sum(epoch.get("fraction", 1.0) for epoch in epochs)
    words = trained * batches.epoch_size * config.batch_size * config.num_steps
    last = epochs[-1] if epochs else {}
    return Row(model=name, epochs=len(epochs), max_epochs=config.max_max_epoch,
               train_perplexity=last.get("train_perplexity"),
               valid_perplexity=last.get("valid_perplexity"),
               test_perplexity=metrics.get("test_perplexity"),
               train_seconds=train_seconds, wall_seconds=_read_wall_seconds(save_path),
               train_wps=words / train_seconds if train_seconds > 0 else None)


def perplexity_table(rows):
    """Markdown: one row per run, final epoch's train/valid perplexity and the exact test one."""
    lines = ["| model | epochs | train ppl | valid ppl | test ppl | train time | wall time "
             "| train wps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.epochs}/{r.max_epochs} "
                     f"| {common.num(r.train_perplexity, '{:.2f}')} "
                     f"| {common.num(r.valid_perplexity, '{:.2f}')} "
                     f"| {common.num(r.test_perplexity, '{:.2f}')} "
                     f"| {common.duration(r.train_seconds)} | {common.duration(r.wall_seconds)} "
                     f"| {common.num(r.train_wps)} |")
    return "\n".join(lines)


def _print_dry_run(args, names, save_paths, extra):
    for name in names:
        action = ("collect" if args.collect_only else
                  " ".join(_driver_command(name, save_paths[name], args.data_path, extra)))
        print(f"{name}: {action}; then tabulate {save_paths[name]}/metrics.json")


def _collect(names, save_paths, data_path):
    """(the Rows of the runs that have a readable metrics.json, how many had an unreadable
    one); says on stderr which are not in the table and why."""
    corpus = reader.load_corpus(data_path)
    rows, unreadable = [], 0
    for name in names:
        try:
            row = collect_run(name, save_paths[name], corpus)
        except common.BenchmarkError as e:
            print(f"{name}: {e}; not in the table", file=sys.stderr)
            unreadable += 1
            continue
        if row is None:
            print(f"{name}: no metrics.json in {save_paths[name]}; not in the table",
                  file=sys.stderr)
        else:
            rows.append(row)
    return rows, unreadable


def _check_output(path):
    """Raises BenchmarkError unless --output can be written (before any training)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or not os.path.isdir(directory) or not os.access(directory, os.W_OK):
        raise common.BenchmarkError(f"--output={path}: cannot write a file there; name a file "
                                    f"in an existing, writable directory")


def _write_output(path, table):
    try:
        with open(path, "w") as f:
            f.write(table + "\n")
    except OSError as e:
        raise common.BenchmarkError(f"cannot write --output={path}: {e.strerror}; the table "
                                    f"is printed above") from None


def run(args, extra):
    """The `perplexity` command: train (unless --collect_only), then print the table.

    Args:
      args: argparse.Namespace with configs, data_path, root, collect_only, output, dry_run.
      extra: flags passed on to ptb_word_lm.py.
    Returns:
      the exit code: 1 if a run failed, a metrics.json is unreadable or no run has one,
      else 0.
    Raises:
      BenchmarkError, ConfigError, DataError: a bad flag value or missing data.
    """
    names = common.parse_configs(args.configs)
    common.check_data(args.data_path)
    _check_passed_on(extra)
    if args.collect_only and extra:
        raise common.BenchmarkError(f"--collect_only trains nothing, so driver flags make no "
                                    f"sense: {' '.join(extra)}")
    if args.output:
        _check_output(args.output)
    save_paths = {name: os.path.abspath(os.path.join(args.root, name)) for name in names}
    if args.dry_run:
        _print_dry_run(args, names, save_paths, extra)
        return 0
    failed = False
    if not args.collect_only:
        for name in names:
            failed |= not run_driver(name, save_paths[name], args.data_path, extra)
    rows, unreadable = _collect(names, save_paths, args.data_path)
    table = perplexity_table(rows)
    print(table, flush=True)
    if args.output:
        _write_output(args.output, table)
    return 1 if failed or unreadable or not rows else 0
