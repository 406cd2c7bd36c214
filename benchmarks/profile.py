"""Where a step's time goes: steps run under TensorFlow's profiler, events summed.

Runs training steps, or evaluation steps with --phase=eval, of a config in a
mode (the library's steps, as measure.py times them) under tf.profiler, reads
the trace it wrote (an XSpace protobuf) and sums, per event name, the self
time of the host's events: what an event took less the events nested in it on
the same thread. The names are XLA's thunks (each dot, each fusion of the
compiled step), TensorFlow's ops run outside XLA, and the runtime's own spans
(dispatch, waiting, compiling: left out of the tables, their sum printed).
Thread-pool threads count too, so the total is CPU time over every thread, not
wall time: shares are of the work's. Names that differ only in a numeric
suffix (dot.12, dot.31) are also summed as one kind.

It also reports how much of the wall time no thread was inside a traced piece of
work (the union of the innermost work events over every thread, taken from the
steps' time): the runtime between ops, or work the trace does not show. Under
XLA some dots show only as a short event while their work goes on untraced (in
medium's training step the weight-gradient products with a transposed operand:
events under 1 ms for 10-50 ms of work), so read their share from this figure."""

import collections
import dataclasses
import glob
import os
import re
import tempfile
import time

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

import model as model_lib
import precision as precision_lib
import reader
import training
from benchmarks import common, measure
from rnn import kernels


@dataclasses.dataclass
class EventTotal:
    """One event name's count and summed self time over the profiled steps."""
    name: str
    count: int
    self_ms: float


@dataclasses.dataclass
class Profile:
    """One profiled (config, mode, phase): wall time of the steps, and the events by self time."""
    config: str
    mode: str
    phase: str  # "train" or "eval"
    steps: int
    wall_ms: float
    traced_ms: float  # wall time during which some thread was in a traced piece of work
    events: list  # EventTotal, largest self time first
    kinds: list  # EventTotal per kind (the name without its numeric suffix)


def self_times(events):
    """Self time (ps) of each event of one thread's line: its duration less its children's.

    Args:
      events: (name, offset_ps, duration_ps) of one line; nested events lie inside
        their parent's span.
    Returns:
      [(name, self_ps)], one per event.
    """
    result = []
    stack = []  # [index into result, end_ps] of the open ancestors
    for name, offset, duration in sorted(events, key=lambda e: (e[1], -e[2])):
        while stack and stack[-1][1] <= offset:
            stack.pop()
        if stack:
            parent = stack[-1][0]
            result[parent] = (result[parent][0], result[parent][1] - duration)
        result.append((name, duration))
        stack.append((len(result) - 1, offset + duration))
    return result


def innermost(events):
    """The events of one thread's line that hold none of the others: [(name, offset, duration)].

    Events on one line nest, so in start order (longest first) an event holds
    another exactly when the next one starts before it ends.
    """
    ordered = sorted(events, key=lambda e: (e[1], -e[2]))
    return [(name, offset, duration) for i, (name, offset, duration) in enumerate(ordered)
            if i + 1 == len(ordered) or ordered[i + 1][1] >= offset + duration]


def covered(spans):
    """Length of the union of [start, end) spans, in their unit."""
    total, reach = 0, None
    for start, end in sorted(spans):
        if reach is None or start > reach:
            total, reach = total + end - start, end
        elif end > reach:
            total, reach = total + end - reach, end
    return total


def kind(name):
    """An event's kind: its name without a trailing numeric suffix (dot.12 -> dot)."""
    return re.sub(r"[._]\d+$", "", name)


def read_xspace(path, plane_prefix="/host:CPU"):
    """Reads the trace at path.

    Returns:
      ({name: [count, self_ps]} of every event on the host planes, ps of wall time
      during which some thread was in an innermost event that is work, not is_runtime).
    """
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0, 0])
    work_spans = []  # [start_ps, end_ps) on one clock: the line's start plus the offset
    for plane in space.planes:
        if not plane.name.startswith(plane_prefix):
            continue
        names = {key: meta.name or meta.display_name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            events = [(names.get(e.metadata_id, "?"), e.offset_ps, e.duration_ps)
                      for e in line.events]
            for name, self_ps in self_times(events):
                totals[name][0] += 1
                totals[name][1] += self_ps
            start = line.timestamp_ns * 1000
            work_spans += [(start + offset, start + offset + duration) for _, offset, duration
                           in innermost([e for e in events if not is_runtime(e[0])])]
    return totals, covered(work_spans)


def _sorted_totals(totals):
    return sorted((EventTotal(name, count, ps / 1e9) for name, (count, ps) in totals.items()),
                  key=lambda e: -e.self_ms)


class _Window:
    """The profiled, timed stretch of steps: the profiler on and the wall clock running."""

    def __init__(self, logdir):
        self.logdir, self.start, self.wall = logdir, None, None

    def open(self):
        tf.profiler.experimental.start(self.logdir)
        self.start = time.perf_counter()

    def close(self):
        self.wall = time.perf_counter() - self.start
        tf.profiler.experimental.stop()


class _WindowHooks(measure._StepClock):
    """measure's step clock that opens the window where its clock starts (after `warmup`
    steps, >= 1) and closes it where it stops, inside the hook, so that building and
    dropping the tf.data pipeline stays outside."""

    def __init__(self, warmup, steps, window):
        super().__init__(warmup, steps)
        self.window = window

    def after_step(self, ts, outputs):
        stop = super().after_step(ts, outputs)  # it waits for the step at both edges
        if self.done == self.warmup:
            self.window.open()
        if stop:
            self.window.close()
        return stop


def _run_steps(ts, train_step, batches, hooks):
    """Training steps of the one train_step until `hooks` stop them, state carried, going
    round the split as often as needed."""
    epoch = int(ts.epoch.numpy())
    while training.run_epoch(ts, train_step, batches, hooks):
        epoch += 1
        ts.reset_epoch(epoch)


# The runtime's own spans: dispatch, waiting for a result, compiling, tracing; and its
# markers (a thunk's end, an allocation). Their self time is mostly a thread waiting for the
# work, so the work's table leaves them out.
_RUNTIME = re.compile(r"::|^(BlockUntilReady|Eager|TFE_|tf\.function|convert_to_tensor|"
                      r"wrapped_copy|ParallelFor|end: |Memory(Dea|A)llocation$)|^(train|eval)_step$|"
                      r"^(FunctionRun|ExecutorDoneCallback|Prefetch(Produce|Consume))$|"
                      r"Compile|Pass$|^Canonicalizer")


def is_runtime(name):
    """True for the runtime's spans (_RUNTIME), False for work: XLA's thunks, TF's ops."""
    return bool(_RUNTIME.search(name))


PHASES = ("train", "eval")


def _step_runner(config, mode, corpus, phase, seed):
    """(label of the kernel, run(warmup, steps, window)): runs warmup + steps steps of
    `phase`, state carried, the last `steps` inside the _Window."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    rnn_mode = model_lib.resolve_rnn_mode(config, mode.rnn_mode)
    jit_compile = kernels.jit_compile(rnn_mode, mode.xla)
    if phase == "eval":  # forward-only passes run in float32 whatever the precision
        label = dataclasses.replace(mode, precision=precision_lib.FLOAT32).label_as_run(rnn_mode)
        return label, _eval_runner(config, rnn_mode, jit_compile, corpus, seed)
    label = mode.label_as_run(rnn_mode)
    precision_lib.check(mode.precision, rnn_mode, jit_compile)
    return label, _train_runner(config, rnn_mode, jit_compile, corpus, seed, mode.precision)


def _train_runner(config, rnn_mode, jit_compile, corpus, seed, precision):
    """run(warmup, steps, window): training steps of the library's step, state carried."""
    ts = training.TrainState(config, rnn_mode=rnn_mode, seed=seed, precision=precision)
    ts.reset_epoch(0)
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    train_step = training.make_train_step(ts, jit_compile=jit_compile)
    return lambda warmup, steps, window: _run_steps(ts, train_step, batches,
                                                    _WindowHooks(warmup, steps, window))


def _eval_runner(config, rnn_mode, jit_compile, corpus, seed):
    """run(steps): validation's forward-only steps, state carried across calls."""
    model = model_lib.PTBModel.from_config(config, rnn_mode=rnn_mode, seed=seed)
    batches = reader.ptb_producer(corpus.valid, config.batch_size, config.num_steps)
    eval_step = training.make_eval_step(model, config.batch_size, config.num_steps, jit_compile)
    batch_iter = iter(batches.dataset().repeat())
    state = model.zero_state(config.batch_size)

    def run(warmup, steps, window):  # one iterator throughout: no pipeline in the window
        nonlocal state
        state = measure.run_eval_steps(eval_step, batch_iter, state, warmup)
        window.open()
        state = measure.run_eval_steps(eval_step, batch_iter, state, steps)
        window.close()
    return run


def profile(name, mode, data_path, overrides=(), warmup=10, steps=20, seed=0, phase="train"):
    """Profiles `steps` steps of `phase` ("train" or "eval": the forward-only step of
    validation) of config `name` in `mode` after `warmup` untimed ones.

    Returns:
      Profile.
    Raises:
      errors.UserError: bad data, config or kernel; BenchmarkError if no trace was written.
    """
    corpus = reader.load_corpus(data_path)
    config = measure.resolve_config(name, overrides, corpus.vocab_size)
    label, run_steps = _step_runner(config, mode, corpus, phase, seed)
    with tempfile.TemporaryDirectory() as logdir:
        window = _Window(logdir)
        run_steps(warmup, steps, window)  # the warm-up traces and compiles, unprofiled
        wall = window.wall
        traces = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not traces:
            raise common.BenchmarkError(f"the profiler wrote no trace under {logdir}")
        totals, traced_ps = read_xspace(traces[0])
    by_kind = collections.defaultdict(lambda: [0, 0])
    for event_name, (count, ps) in totals.items():
        by_kind[kind(event_name)][0] += count
        by_kind[kind(event_name)][1] += ps
    return Profile(config=name, mode=label, phase=phase, steps=steps, wall_ms=1e3 * wall,
                   traced_ms=min(traced_ps / 1e9, 1e3 * wall), events=_sorted_totals(totals), kinds=_sorted_totals(by_kind))


def work(rows):
    """The rows that are work (not is_runtime)."""
    return [row for row in rows if not is_runtime(row.name)]


def table(rows, total_ms, steps, top):
    """Markdown: the `top` rows by self time, per step and as a share of all rows' time."""
    lines = ["| event | count per step | self ms per step | share |", "|---|---:|---:|---:|"]
    for row in rows[:top]:
        lines.append(f"| {row.name} | {row.count / steps:g} | {row.self_ms / steps:.3f} "
                     f"| {row.self_ms / total_ms:.1%} |")
    return "\n".join(lines)


def run(args):
    """The `profile` command: per config, the kinds and the events by self time; JSON last.

    Args:
      args: argparse.Namespace with configs, rnn_mode, xla, override, data_path, warmup,
        steps, top, seed, phase, precision, dry_run.
    Returns:
      the exit code, 0.
    """
    names = common.parse_configs(args.configs)
    mode = measure.Mode(args.rnn_mode, bool(args.xla), precision=args.precision)
    checked = mode if args.phase == "train" else dataclasses.replace(  # eval runs float32
        mode, precision=precision_lib.FLOAT32)
    labels = {}
    for name in names:  # a config's ConfigError or a kernel's refusal before any work
        config = measure.resolve_config(name, args.override, 2)
        labels[name] = checked.label_as_run(measure.check_mode(config, checked)[0])
    if args.steps < 1 or args.warmup < 1 or args.top < 1:
        raise common.BenchmarkError("--steps, --warmup and --top must be >= 1 (the warm-up "
                                    "traces and compiles the step, unprofiled)")
    common.check_data(args.data_path)
    if args.dry_run:
        for name in names:
            print(f"{name} {labels[name]}: {args.warmup} warm-up and {args.steps} profiled "
                  f"{args.phase} steps")
        return 0
    results = []
    for name in names:
        result = profile(name, mode, args.data_path,
                         args.override, args.warmup, args.steps, args.seed, args.phase)
        total = sum(e.self_ms for e in work(result.events))
        runtime = sum(e.self_ms for e in result.events) - total
        untraced = (result.wall_ms - result.traced_ms) / result.steps
        print(f"{name} {result.mode}: {result.steps} {result.phase} steps, "
              f"{result.wall_ms / result.steps:.1f} ms per step wall, of which "
              f"{untraced:.1f} ms with no thread in traced work; per step over every "
              f"thread {total / result.steps:.1f} ms of work (below) and "
              f"{runtime / result.steps:.1f} ms of the runtime's spans "
              f"(dispatch, waiting, compiling)", flush=True)
        print(table(work(result.kinds), total, result.steps, args.top), flush=True)
        print(table(work(result.events), total, result.steps, args.top), flush=True)
        results.append(dataclasses.asdict(result))
    common.print_summary("profile", overrides=args.override, results=results)
    return 0
