"""Data-parallel scaling: 1 worker on one core against 2 workers on one core each, per config.

    1 worker:   taskset -c 0  (strategy none)
    2 workers:  taskset -c 0 / taskset -c 1, multi_worker on loopback ports

The global batch is the config's in both (distribute.py splits its rows), so
both runs train on the same words per step and words/s compares step times.
Each worker also times the all-reduce alone on the step's gradients (the
dense ones and the embedding's IndexedSlices, at the shapes the step makes),
which gives its share of a step. From the measured figures, `project` works
out by arithmetic what N workers on a network of B Gb/s would reach: the
compute scales as measured from 1 to 2 workers per doubling, and a ring
all-reduce moves 2 (N - 1) / N times the gradient bytes through each worker's link.

The hidden `_scaling_worker` command is one measuring process (a worker of
either run); `run` starts them and tabulates.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import subprocess
import tempfile
import time

import tensorflow as tf

import distribute
import model as model_lib
import reader
import training
from benchmarks import common
from benchmarks import measure
from rnn import kernels

DEFAULT_CONFIGS = "small,medium,large"


@dataclasses.dataclass
class WorkerResult:
    """What one measuring process reports (the 2-worker run: worker 0's)."""
    step_seconds: float  # per training step, timed steps only
    words_per_second: float  # the global batch's words per step / step_seconds
    allreduce_seconds: float | None  # the step's all-reduce alone; None with one worker
    gradient_bytes: int  # dense gradients + the embedding's IndexedSlices, one replica


@dataclasses.dataclass
class ScalingRow:
    config: str
    one_wps: float | None = None
    two_wps: float | None = None
    efficiency: float | None = None  # two_wps / (2 * one_wps)
    allreduce_share: float | None = None  # of a 2-worker step
    gradient_mb: float | None = None
    projected_workers: int | None = None
    projected_gbps: float | None = None
    projected_wps: float | None = None
    projected_efficiency: float | None = None
    error: str | None = None


# -------------------- arithmetic (tested with made-up figures)

def efficiency(one_wps, two_wps, workers=2):
    """Scaling efficiency: words/s of `workers` workers / (workers x one worker's words/s)."""
    return two_wps / (workers * one_wps)


def ring_allreduce_seconds(gradient_bytes, workers, gbps):
    """The bandwidth term of a ring all-reduce: each worker sends and receives
    2 (workers - 1) / workers x the gradient bytes over a link of `gbps` Gb/s."""
    if workers < 2:
        return 0.0
    return 2 * (workers - 1) / workers * gradient_bytes * 8 / (gbps * 1e9)


def project(one, two, workers, gbps):
    """Words/s and efficiency of `workers` workers on a `gbps` Gb/s network, by arithmetic.

    The compute of a step (the 2-worker step less its all-reduce) is taken to
    shrink per doubling of the workers as it did from 1 to 2; the all-reduce
    becomes the ring's bandwidth time on the network (loopback's latency and
    this machine's memory copies dropped: an optimistic bound).

    Args:
      one, two: WorkerResult of the 1- and 2-worker runs.
    Returns:
      (words per second, efficiency).
    """
    compute_two = two.step_seconds - two.allreduce_seconds
    if compute_two <= 0:
        raise common.BenchmarkError(f"the all-reduce alone ({two.allreduce_seconds:.4f} s) took "
                                    f"as long as the whole step ({two.step_seconds:.4f} s): "
                                    f"the machine was busy; measure again")
    per_doubling = one.step_seconds / compute_two
    compute = one.step_seconds / per_doubling ** math.log2(workers)
    step = compute + ring_allreduce_seconds(two.gradient_bytes, workers, gbps)
    words_per_step = one.words_per_second * one.step_seconds
    wps = words_per_step / step
    return wps, efficiency(one.words_per_second, wps, workers)


def row(config, one, two, workers=8, gbps=10.0):
    """The table's row of one config from its two measurements."""
    wps, eff = project(one, two, workers, gbps)
    return ScalingRow(config=config, one_wps=one.words_per_second,
                      two_wps=two.words_per_second,
                      efficiency=efficiency(one.words_per_second, two.words_per_second),
                      allreduce_share=two.allreduce_seconds / two.step_seconds,
                      gradient_mb=two.gradient_bytes / 1e6, projected_workers=workers,
                      projected_gbps=gbps, projected_wps=wps, projected_efficiency=eff)


def table(rows):
    lines = ["| config | 1 worker words/s | 2 workers words/s | efficiency | all-reduce share "
             "of a 2-worker step | gradient MB | projected words/s | projected efficiency |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.config} | FAILED: {r.error} |")
            continue
        lines.append(
            f"| {r.config} | {common.num(r.one_wps)} | {common.num(r.two_wps)} | "
            f"{r.efficiency:.0%} | {r.allreduce_share:.0%} | {r.gradient_mb:.1f} | "
            f"{common.num(r.projected_wps)} ({r.projected_workers} x {r.projected_gbps:g} Gb/s) | "
            f"{r.projected_efficiency:.0%} |")
    return "\n".join(lines)


# -------------------- the measuring processes

def worker_command(args, config, core):
    """The command line of one measuring process pinned to `core`."""
    flags = [f"--config={config}", f"--warmup={args.warmup}", f"--steps={args.steps}",
             f"--data_path={args.data_path}", *[f"--override={o}" for o in args.override]]
    return ["taskset", "-c", str(core), *common.script_command("_scaling_worker", *flags)]


def _result(child):
    values = common.child_result(child)
    if values is None:
        raise common.BenchmarkError(common.child_failure(child))
    return WorkerResult(**values)


def run_workers(args, config, count):
    """Runs `count` measuring processes (one core each); worker 0's WorkerResult."""
    _check_host()
    if count == 1:
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        return _result(common.run_child(worker_command(args, config, 0), env=env))
    ports = distribute.free_loopback_ports(count)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    with contextlib.ExitStack() as stack:
        # Files, not pipes: a worker blocked on a full pipe would hang the other in a collective.
        outputs = [(stack.enter_context(tempfile.TemporaryFile("w+")),
                    stack.enter_context(tempfile.TemporaryFile("w+"))) for _ in range(count)]
        procs = []
        for index, (out, err) in enumerate(outputs):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            procs.append(subprocess.Popen(worker_command(args, config, index), env=env,
                                          stdout=out, stderr=err, text=True))
        children = []
        for proc, (out, err) in zip(procs, outputs):
            proc.wait()
            out.seek(0)
            err.seek(0)
            children.append(common.ChildRun(proc.returncode, out.read(), err.read(), 0.0))
    failed = [f"worker {index}: {common.child_failure(child)}"
              for index, child in enumerate(children) if child.returncode]
    if failed:  # every one: the first to fail may not be the first listed
        raise common.BenchmarkError("; ".join(failed))
    return _result(children[0])


def _check_host():
    if not shutil.which("taskset"):
        raise common.BenchmarkError("scaling pins each worker with taskset (util-linux), which "
                                    "is not installed")
    if len(os.sched_getaffinity(0)) < 2:
        raise common.BenchmarkError("scaling needs 2 cores (one per worker); this process may "
                                    f"use {len(os.sched_getaffinity(0))}")


def run(args, runner=None):
    """The `scaling` command: a table and a JSON line of each config's 1- and 2-worker figures.

    Args:
      args: argparse.Namespace (configs, data_path, warmup, steps, override,
        workers, gbps, dry_run).
      runner: (args, config, count) -> WorkerResult; default run_workers (the
        tests pass a fake).
    Returns:
      the exit code: 0, or 1 if a config failed.
    Raises:
      BenchmarkError, ConfigError: a bad flag value, no data, no taskset.
    """
    names = common.parse_configs(args.configs)
    if args.warmup < 1 or args.steps < 1 or args.workers < 2 or not 0 < args.gbps < math.inf:
        raise common.BenchmarkError(f"--warmup and --steps must be >= 1, --workers >= 2 and "
                                    f"--gbps finite and > 0, got {args.warmup}, {args.steps}, "
                                    f"{args.workers} and {args.gbps}")
    for name in names:
        config = measure.resolve_config(name, args.override, 2)  # a bad override, now
        for workers in sorted({2, args.workers}):  # the global batch is split in rows
            if config.batch_size % workers:
                raise common.BenchmarkError(
                    f"{name}: batch_size {config.batch_size} does not split into {workers} "
                    f"workers' rows (training refuses it); pick --workers or "
                    f"--override=batch_size= so that it divides")
    if args.dry_run:
        for name in names:
            for core in (0, 1):
                print(f"{name} worker on core {core}: "
                      f"{' '.join(worker_command(args, name, core))}")
        return 0
    common.check_data(args.data_path)
    runner = runner or run_workers
    rows = []
    for name in names:
        try:
            one, two = runner(args, name, 1), runner(args, name, 2)
            rows.append(row(name, one, two, args.workers, args.gbps))
        except common.BenchmarkError as e:
            rows.append(ScalingRow(config=name, error=str(e)))
        print(f"{name}: {rows[-1]}", flush=True)
    print(table(rows), flush=True)
    common.print_summary("scaling", data_path=os.path.abspath(args.data_path),
                         warmup=args.warmup, steps=args.steps, overrides=args.override,
                         workers=args.workers, gbps=args.gbps,
                         results=[dataclasses.asdict(r) for r in rows])
    return 1 if any(r.error for r in rows) else 0


def measure_worker(args):
    """The `_scaling_worker` command: this process's step time (and all-reduce time) as JSON.

    The steps are the library's: distribute.create (strategy auto: multi_worker
    under TF_CONFIG, else none), the data-parallel or one-device step, run_epoch.
    """
    corpus = reader.load_corpus(args.data_path)
    config = measure.resolve_config(args.config, args.override, corpus.vocab_size)
    replicas = distribute.create("auto", config.batch_size)
    rnn_mode = model_lib.resolve_rnn_mode(config, kernels.AUTO)  # auto: by the config's cell
    jit_compile = kernels.jit_compile(rnn_mode, None)
    with replicas.scope():
        ts = training.TrainState(config, rnn_mode=rnn_mode)
    ts.reset_epoch(0)
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    step = replicas.make_train_step(ts, jit_compile)
    clock = measure._StepClock(args.warmup, args.steps)
    measure.run_until_stopped(ts, step, batches, clock)
    step_seconds = (clock.stop - clock.start) / args.steps
    allreduce = _time_allreduce(replicas, ts, args.steps) if replicas.strategy else None
    words = config.batch_size * config.num_steps
    print(json.dumps(dataclasses.asdict(WorkerResult(
        step_seconds=step_seconds, words_per_second=words / step_seconds,
        allreduce_seconds=allreduce, gradient_bytes=_gradient_bytes(ts, replicas)))))
    return 0


def _gradient_shapes(ts, replicas):
    """[(dense shape or None, slices rows)]: what one replica's step all-reduces (the
    embedding's gradient as slices of the looked-up rows, unless the softmax shares it)."""
    config = ts.config
    rows = config.batch_size // replicas.num_replicas * config.num_steps
    sparse = ts.model.embedding if not config.tie_embeddings else None  # tied: dense too
    return [(None, rows) if var is sparse else (var.shape.as_list(), 0)
            for var in ts.model.trainable_variables]


def _gradient_bytes(ts, replicas):
    total = 0
    for shape, rows in _gradient_shapes(ts, replicas):
        total += 4 * (math.prod(shape) if shape else rows * (ts.config.hidden_size + 1))
    return total


def _time_allreduce(replicas, ts, steps):
    """Seconds of the step's gradient all-reduce alone, as the step calls it.

    The gradients are made once, outside the timed function, and one element of each
    reduced one is read: the timed calls hold the all-reduce and no pass of their own
    over the gradients.
    """
    hidden, vocab = ts.config.hidden_size, ts.config.vocab_size
    grads = []
    for shape, rows in _gradient_shapes(ts, replicas):
        if shape:
            grads.append(tf.ones(shape))
        else:
            grads.append(tf.IndexedSlices(tf.ones([rows, hidden]), tf.range(rows) % vocab,
                                          tf.constant([vocab, hidden])))

    @tf.function
    def reduce():
        def replica_fn():
            ctx = tf.distribute.get_replica_context()
            reduced = ctx.all_reduce(distribute.SUM, grads, options=replicas.options)
            return tf.add_n([tf.reshape(g.values if isinstance(g, tf.IndexedSlices) else g,
                                        [-1])[0] for g in reduced])
        return replicas.strategy.run(replica_fn)

    for _ in range(3):
        reduce()
    start = time.perf_counter()
    for _ in range(steps):
        result = reduce()
    replicas.strategy.experimental_local_results(result)[0].numpy()
    return (time.perf_counter() - start) / steps
