"""Benchmarks: train/eval speed per config and LSTM mode (against peers), perplexity tables.

    python scripts/benchmark.py throughput --data_path=/path/to/ptb --configs=small,medium \\
        --rnn_modes=basic,block --xla=0,1 --warmup=20 --steps=300 --stream_eval --peers=keras,torch
    python scripts/benchmark.py perplexity --data_path=/path/to/ptb --configs=small,medium \\
        --root=runs --rnn_mode=block              # unknown flags go to ptb_word_lm.py
    python scripts/benchmark.py perplexity --data_path=/path/to/ptb --configs=small --collect_only
    python scripts/benchmark.py ceiling --configs=small,medium,large

throughput: every (config, mode) is measured in its own subprocess (the hidden
`_measure` command), so its peak resident memory is its own, and the timed
steps are the library's (training.make_train_step driven by training.run_epoch,
training.make_eval_step, training.stream_perplexity), never a copy. One line is
printed per measurement, then a Markdown table, and the last line is one JSON
object holding every figure. Absolute words/s drift on a shared machine; the
ratios to peers measured back to back in the same invocation hold better, and
--rounds=N alternates N rounds of peers and modes and reports the medians.

ceiling: times every matrix product of a config's training step (forward and
backward, the shapes fused mode runs) under XLA, each at the faster of its two
weight layouts, and reports the words/s of a step that did nothing else: the
bound the measured words/s are held against.

perplexity: runs ptb_word_lm.py for each config into <root>/<config> (rerunning
resumes), then tabulates each save_path/metrics.json.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
# The environment as given, for the peers: they run as their authors ship them.
PEER_ENV = dict(os.environ)
# Keep TensorFlow's C++ start-up chatter out of the output, as the driver does.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Pool host memory in TensorFlow's BFC allocator, as the driver does (see there why).
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import tensorflow as tf  # noqa: E402

import configs  # noqa: E402
import model as model_lib  # noqa: E402
import reader  # noqa: E402
import training  # noqa: E402
from rnn import fused  # noqa: E402

RNN_MODES = ("basic", "block", "fused", "cudnn", "auto")
PEERS = ("keras", "torch")
PEER_CONFIGS = ("small", "medium", "large")  # the only configs the peer harnesses know
# Where the peer harnesses (keras_peer.py, torch_peer.py) and the torch venv live: flags or env.
DEFAULT_PEER_DIR = os.environ.get("PTB_PEER_DIR", "")
DEFAULT_TORCH_PYTHON = os.environ.get("PTB_TORCH_PYTHON", "")
_DASH = "–"


class BenchmarkError(RuntimeError):
    """A user error (bad flag, missing data); main prints it as one line and exits 2."""


# -------------------- flag parsing

@dataclasses.dataclass(frozen=True)
class Mode:
    """One way of running the training step: the LSTM implementation and XLA on or off."""
    rnn_mode: str
    xla: bool

    @property
    def label(self):
        return self.rnn_mode + ("+xla" if self.xla else "")


def _split(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_bool(text):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise BenchmarkError(f"--xla value {text!r}: expected 0/1 (or true/false)")


def parse_modes(rnn_modes, xla):
    """Expands e.g. --rnn_modes=basic,block+xla --xla=0,1 into Modes, in order, without repeats.

    An item spelled `<mode>+xla` is taken as it is; a bare `<mode>` is crossed
    with every --xla value.

    Raises:
      BenchmarkError: an unknown mode or --xla value, or nothing to run.
    """
    xla_values = [_parse_bool(v) for v in _split(xla)] or [False]
    modes = []
    for item in _split(rnn_modes):
        name, plus, suffix = item.partition("+")
        if name not in RNN_MODES or (plus and suffix != "xla"):
            raise BenchmarkError(f"--rnn_modes item {item!r}: expected one of "
                                 f"{', '.join(RNN_MODES)}, optionally with +xla (e.g. basic+xla)")
        for flag in ([True] if plus else xla_values):
            if Mode(name, flag) not in modes:
                modes.append(Mode(name, flag))
    if not modes:
        raise BenchmarkError("--rnn_modes is empty; e.g. --rnn_modes=basic,block")
    return modes


def parse_configs(text):
    names = _split(text)
    for name in names:
        configs.get_config(name)  # ConfigError lists the valid names
    if not names:
        raise BenchmarkError(f"--configs is empty; choose from {', '.join(configs.CONFIGS)}")
    return names


def parse_peers(text):
    names = _split(text)
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise BenchmarkError(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    return names


def check_data(data_path):
    """Raises BenchmarkError unless data_path holds ptb.{train,valid,test}.txt."""
    missing = [name for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
               if not os.path.isfile(os.path.join(data_path, name))]
    if missing:
        raise BenchmarkError(f"no PTB data at --data_path={data_path} (missing "
                             f"{', '.join(missing)}); run scripts/get_ptb.sh or pass --data_path")


def resolve_config(name, overrides, vocab_size):
    """The named config with key=value overrides; vocab_size follows the data, as in the driver."""
    config = configs.apply_overrides(configs.get_config(name), overrides)
    return configs.apply_overrides(config, {"vocab_size": vocab_size})


# -------------------- child: one measurement

def _rss_mb(max_rss):
    """ru_maxrss in MiB (Linux reports KiB, macOS bytes)."""
    return max_rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


class _StepClock:
    """A run_epoch should_stop hook: starts the clock after `warmup` steps, stops `steps` later.

    It counts steps in Python, so polling it never waits for the device. The
    clock stops inside the hook, so tearing down the abandoned tf.data iterator
    (up to ~0.1 s) is not timed.
    """

    def __init__(self, warmup, steps):
        self.warmup, self.total, self.done = warmup, warmup + steps, 0
        self.start = time.perf_counter() if warmup == 0 else None  # warmup 0: tracing is timed
        self.stop = None

    def __call__(self, ts):
        self.done += 1
        if self.done == self.warmup:
            ts.global_step.numpy()  # reading a variable waits for the warm-up's last step
            self.start = time.perf_counter()
        if self.done < self.total:
            return False
        ts.global_step.numpy()  # ... and for the last timed step
        self.stop = time.perf_counter()
        return True


def time_training(ts, batches, warmup, steps, jit_compile):
    """Seconds of `steps` training steps after `warmup` ones, state carried from batch to batch.

    A split shorter than warmup + steps batches is gone round again as a new
    epoch (zero state), as the driver does.
    """
    train_step = training.make_train_step(ts, jit_compile=jit_compile)
    clock = _StepClock(warmup, steps)
    epoch = 0
    while training.run_epoch(ts, train_step, batches, should_stop=clock):
        epoch += 1
        ts.reset_epoch(epoch)
    ts.check_finite()
    return clock.stop - clock.start


def _run_eval_steps(eval_step, batch_iter, state, steps):
    """Runs `steps` eval steps, state carried; returns the final state once they are done."""
    losses = None
    for _ in range(steps):
        x, y = next(batch_iter)
        losses, state = eval_step(x, y, state)
    if losses is not None:
        losses.numpy()  # reading the result waits for the last step
    return state


def time_evaluation(model, batches, warmup, steps, jit_compile=False):
    """Seconds of `steps` evaluation steps at the batches' shape, after `warmup` (tracing) ones.

    The steps are training.make_eval_step's, with state carried from batch to
    batch as in training.evaluate, over one tf.data pipeline that goes round
    the split as often as needed. training.evaluate itself is not timed: it
    builds a new pipeline per pass (~0.2 s), which would swamp short runs.
    """
    eval_step = training.make_eval_step(model, batches.batch_size, batches.num_steps,
                                        jit_compile=jit_compile)
    batch_iter = iter(batches.dataset().repeat())
    state = _run_eval_steps(eval_step, batch_iter, model.zero_state(batches.batch_size), warmup)
    start = time.perf_counter()
    _run_eval_steps(eval_step, batch_iter, state, steps)
    return time.perf_counter() - start


def measure(args):
    """One (config, mode) measurement in this process; returns the figures as a dict."""
    corpus = reader.load_corpus(args.data_path)
    config = resolve_config(args.config, args.override, corpus.vocab_size)
    rnn_mode = model_lib.resolve_rnn_mode(args.rnn_mode)
    ts = training.TrainState(config, rnn_mode=rnn_mode, seed=args.seed)
    ts.reset_epoch(0)
    train_batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    valid_batches = reader.ptb_producer(corpus.valid, config.batch_size, config.num_steps)
    words_per_step = config.batch_size * config.num_steps
    train_seconds = time_training(ts, train_batches, args.warmup, args.steps, args.xla)
    eval_seconds = time_evaluation(ts.model, valid_batches, args.warmup, args.eval_steps,
                                   args.xla)
    result = {
        "config": args.config, "rnn_mode": rnn_mode, "xla": args.xla,
        "batch_size": config.batch_size, "num_steps": config.num_steps,
        "parameters": sum(int(tf.size(v)) for v in ts.model.trainable_variables),
        "train_steps": args.steps, "train_seconds": train_seconds,
        "train_wps": args.steps * words_per_step / train_seconds,
        "eval_steps": args.eval_steps, "eval_seconds": eval_seconds,
        "eval_wps": args.eval_steps * words_per_step / eval_seconds,
        "stream_eval_seconds": None}
    if args.stream_eval:
        start = time.perf_counter()
        # Traces (and under XLA compiles) once, as the driver's does.
        training.stream_perplexity(ts.model, corpus.test, jit_compile=args.xla)
        result["stream_eval_seconds"] = time.perf_counter() - start
        result["stream_eval_words"] = len(corpus.test) - 1
    result["peak_rss_mb"] = _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return result


def _measure_main(args):
    try:
        result = measure(args)
    except (reader.DataError, configs.ConfigError, fused.NoGPUError, training.Diverged) as e:
        sys.exit(f"error: {e}")
    except tf.errors.OpError as e:  # e.g. an op XLA cannot compile: BlockLSTM under --xla
        message = re.sub(r"\[_XlaMustCompile[^\]]*\]", "", e.message.strip().splitlines()[0])
        sys.exit(f"error: {type(e).__name__}: {message}")
    print(json.dumps(result), flush=True)


# -------------------- parent: subprocesses

@dataclasses.dataclass
class ChildRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float  # the child's own peak (wait4), for peers that do not report theirs


def run_child(cmd, env=None):
    """Runs cmd to the end, capturing its output; wait4 gives that child's own peak RSS."""
    with tempfile.TemporaryFile("w+") as err:  # a file, so a chatty stderr cannot block the pipe
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        with proc.stdout:
            out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
        err.seek(0)
        return ChildRun(proc.returncode, out, err.read(), _rss_mb(usage.ru_maxrss))


def last_json(text):
    """The JSON object on the last non-empty line of text, or None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        obj = json.loads(lines[-1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _failure(run):
    """One line saying why a child failed: its last line of stderr (or stdout)."""
    for text in (run.stderr, run.stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return f"exit {run.returncode}: {lines[-1]}"
    return f"exit {run.returncode}, no output"


def _measure_command(args, name, mode):
    cmd = [sys.executable, os.path.abspath(__file__), "_measure", f"--config={name}",
           f"--rnn_mode={mode.rnn_mode}", f"--xla={int(mode.xla)}", f"--warmup={args.warmup}",
           f"--steps={args.steps}", f"--eval_steps={args.eval_steps or args.steps}",
           f"--data_path={args.data_path}", f"--seed={args.seed}"]
    cmd += [f"--override={item}" for item in args.override]
    return cmd + (["--stream_eval"] if args.stream_eval else [])


def measure_in_child(args, name, mode):
    """Runs one measurement in a fresh process; returns its figures (or an error) as a dict."""
    run = run_child(_measure_command(args, name, mode))
    result = last_json(run.stdout) if run.returncode == 0 else None
    if result is None:
        return {"config": name, "mode": mode.label, "rnn_mode": mode.rnn_mode, "xla": mode.xla,
                "train_wps": None, "eval_wps": None, "stream_eval_seconds": None,
                "peak_rss_mb": None, "error": _failure(run)}
    result["mode"] = mode.label if mode.rnn_mode != "auto" else f"auto({result['rnn_mode']})"
    return result


def _peer_command(args, peer, name):
    script = os.path.join(args.peer_dir, f"{peer}_peer.py")
    python = sys.executable if peer == "keras" else args.torch_python
    if name not in PEER_CONFIGS:
        return None, f"the peer harnesses have no {name!r} config"
    if not os.path.isfile(script):
        return None, f"{script} not found (--peer_dir or PTB_PEER_DIR)"
    if not python or not os.path.isfile(python):
        return None, (f"torch python {python!r} not found (--torch_python or PTB_TORCH_PYTHON: "
                      f"a venv with torch; see {args.peer_dir}/README.md)")
    cmd = [python, script, "--config", name, "--warmup", str(args.warmup),
           "--batches", str(args.steps)]
    if peer == "torch":  # keras_peer.py always reads <peer_dir>/../data/ptb
        cmd += ["--data", os.path.join(args.data_path, "ptb.train.txt")]
    return cmd, None


def run_peer(args, peer, name):
    """Runs one peer harness on one config; returns {"peer", "config", "train_wps" | "note"}."""
    cmd, note = _peer_command(args, peer, name)
    if cmd is None:
        return {"peer": peer, "config": name, "note": f"skipped: {note}"}
    run = run_child(cmd, env=PEER_ENV)
    result = last_json(run.stdout) if run.returncode == 0 else None
    if result is None or "train_wps" not in result:
        return {"peer": peer, "config": name, "note": f"failed: {_failure(run)}"}
    return {"peer": peer, "config": name, "train_wps": float(result["train_wps"]),
            "peak_rss_mb": run.peak_rss_mb, "harness": result.get("peer")}


def add_ratios(result, peer_results):
    """Adds peer_wps, fastest_peer and ratio_to_fastest_peer (train_wps / fastest peer's)."""
    timed = {p["peer"]: p["train_wps"] for p in peer_results
             if p["config"] == result["config"] and "train_wps" in p}
    result["peer_wps"] = timed
    result["fastest_peer"] = max(timed, key=timed.get) if timed else None
    result["ratio_to_fastest_peer"] = (
        result["train_wps"] / timed[result["fastest_peer"]]
        if timed and result.get("train_wps") else None)


def run_ceiling(name):
    """Config `name`'s ceiling (measure_ceiling), in a child process so it runs alone as
    the measurements do: {"config", "train_wps", "eval_wps"} or {"config", "error"}."""
    run = run_child([sys.executable, os.path.abspath(__file__), "ceiling", f"--configs={name}"])
    summary = last_json(run.stdout) if run.returncode == 0 else None
    if not summary or not summary.get("results"):
        return {"config": name, "error": _failure(run)}
    result = summary["results"][0]
    return {"config": name, "train_wps": result["train_wps"], "eval_wps": result["eval_wps"]}


def add_ceiling(results, ceiling_rounds):
    """Adds each result's fraction of its config's ceiling (the median over the rounds that
    measured one); returns that ceiling, or None."""
    timed = [c for c in ceiling_rounds if "error" not in c]
    if not timed:
        return None
    ceiling_wps = {key: statistics.median(c[key] for c in timed)
                   for key in ("train_wps", "eval_wps")}
    for result in results:
        if "error" not in result:
            result["ceiling_wps"] = ceiling_wps
            result["of_ceiling"] = {key: result[key] / ceiling_wps[key] for key in ceiling_wps}
    return dict(ceiling_wps, config=timed[0]["config"],
                rounds_train_wps=[c["train_wps"] for c in timed])


# -------------------- reporting

def _num(value, fmt="{:,.0f}"):
    return _DASH if value is None else fmt.format(value)


def describe_result(result):
    """The human-readable line of one measurement."""
    head = f"{result['config']} {result['mode']}:"
    if "error" in result:
        error = result["error"]
        return f"{head} FAILED ({error[:200] + '...' if len(error) > 200 else error})"
    line = (f"{head} train {_num(result['train_wps'])} wps, eval {_num(result['eval_wps'])} wps"
            f", peak RSS {_num(result['peak_rss_mb'])} MB")
    if result.get("stream_eval_seconds") is not None:
        line += f", stream test eval {result['stream_eval_seconds']:.1f} s"
    if result.get("ratio_to_fastest_peer") is not None:
        line += f", {result['ratio_to_fastest_peer']:.2f}x {result['fastest_peer']}"
    return line


def describe_ceiling(ceiling):
    """The human-readable line of one ceiling measurement."""
    if "error" in ceiling:
        return f"{ceiling['config']} ceiling: FAILED ({ceiling['error'][:200]})"
    return (f"{ceiling['config']} ceiling: train {_num(ceiling['train_wps'])} wps, "
            f"eval {_num(ceiling['eval_wps'])} wps")


def describe_peer(peer):
    head = f"{peer['config']} peer {peer['peer']}:"
    if "train_wps" not in peer:
        return f"{head} {peer['note']}"
    return f"{head} train {_num(peer['train_wps'])} wps, peak RSS {_num(peer['peak_rss_mb'])} MB"


def throughput_table(results, peer_results):
    """Markdown: one row per measurement, then the peers' rows of the same config."""
    rows = ["| config | mode | train wps | eval wps | stream test eval s | peak RSS MB "
            "| vs fastest peer | of ceiling, train / eval |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for result in results:
        if "error" in result:
            rows.append(f"| {result['config']} | {result['mode']} | failed | | | | | |")
            continue
        of_ceiling = result.get("of_ceiling")
        of_ceiling = (_DASH if of_ceiling is None else
                      f"{of_ceiling['train_wps']:.0%} / {of_ceiling['eval_wps']:.0%}")
        ratio = result.get("ratio_to_fastest_peer")
        vs = _DASH if ratio is None else f"{ratio:.2f}x ({result['fastest_peer']})"
        if result.get("rounds_ratio_to_fastest_peer"):
            vs += " rounds " + " ".join(f"{r:.2f}x" for r in result["rounds_ratio_to_fastest_peer"])
        rows.append(f"| {result['config']} | {result['mode']} | {_num(result['train_wps'])} "
                    f"| {_num(result['eval_wps'])} "
                    f"| {_num(result.get('stream_eval_seconds'), '{:.1f}')} "
                    f"| {_num(result['peak_rss_mb'])} | {vs} | {of_ceiling} |")
    for peer in peer_results:
        if "train_wps" in peer:
            rows.append(f"| {peer['config']} | peer: {peer['peer']} | {_num(peer['train_wps'])} "
                        f"| {_DASH} | {_DASH} | {_num(peer['peak_rss_mb'])} | | |")
    return "\n".join(rows)


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_vector_isa():
    """The widest x86 vector extension the CPU reports (AVX-512, AVX2, ...), or "" if unknown.

    Recorded because it moves our ratios to the peers: XLA's matmuls and the
    peers' reach different fractions of peak on AVX2 and AVX-512 hosts.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return ""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")):
        if flag in flags:
            return name
    return ""


def host_info():
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": {"name": platform.node(), "cpu_model": _cpu_model(),
                     "cpu_vector_isa": _cpu_vector_isa(), "cpu_cores": os.cpu_count(),
                     "platform": platform.platform()},
            "python": platform.python_version(), "tf_version": tf.__version__,
            "tf_cpu_allocator_use_bfc": os.environ["TF_CPU_ALLOCATOR_USE_BFC"]}


# -------------------- throughput

def _plan(args):
    """(config names, Modes, peers), every flag checked first so a typo fails before any work."""
    if args.steps < 1 or args.warmup < 0 or (args.eval_steps is not None and args.eval_steps < 1):
        raise BenchmarkError("--steps and --eval_steps must be >= 1 and --warmup >= 0")
    if args.rounds < 1:
        raise BenchmarkError(f"--rounds must be >= 1, got {args.rounds}")
    names, modes = parse_configs(args.configs), parse_modes(args.rnn_modes, args.xla)
    peers = parse_peers(args.peers)
    configs.apply_overrides(configs.SMALL, args.override)  # ConfigError on a bad key
    check_data(args.data_path)
    return names, modes, peers


def _peer_notes(args, peers):
    """Why a ratio to a peer may not be like for like."""
    notes = []
    if peers and args.override:
        notes.append(f"the peers ignore --override {' '.join(args.override)}: the ratios "
                     f"compare different models")
    keras_data = os.path.join(args.peer_dir, os.pardir, "data", "ptb", "ptb.train.txt")
    ours = os.path.join(args.data_path, "ptb.train.txt")
    if "keras" in peers and os.path.realpath(keras_data) != os.path.realpath(ours):
        notes.append(f"keras_peer.py reads {os.path.realpath(keras_data)}, not {ours}")
    return notes


def throughput(args):
    names, modes, peers = _plan(args)
    notes = _peer_notes(args, peers)
    for note in notes:
        print(f"note: {note}", flush=True)
    if args.dry_run:
        for name in names:
            for peer in peers:
                cmd, note = _peer_command(args, peer, name)
                print(f"{name} peer {peer}: {' '.join(cmd) if cmd else 'skipped: ' + note}")
            for mode in modes:
                print(f"{name} {mode.label}: {' '.join(_measure_command(args, name, mode))}")
            if args.ceiling:
                print(f"{name} ceiling: {sys.executable} {os.path.abspath(__file__)} ceiling "
                      f"--configs={name}")
        return 0
    results, peer_results, ceilings = [], [], []
    for name in names:
        name_results, name_peers, name_ceiling = _measure_rounds(args, name, modes, peers)
        results += name_results
        peer_results += name_peers
        ceilings += [name_ceiling] if name_ceiling else []
    print()
    print(throughput_table(results, peer_results))
    print()
    summary = dict(host_info(), command="throughput", data_path=os.path.abspath(args.data_path),
                   warmup=args.warmup, steps=args.steps, eval_steps=args.eval_steps or args.steps,
                   rounds=args.rounds, overrides=args.override, results=results,
                   peers=peer_results, ceilings=ceilings, notes=notes)
    print(json.dumps(summary), flush=True)
    return 1 if any("error" in r for r in results) else 0


def _measure_rounds(args, name, modes, peers):
    """args.rounds rounds of (every peer, every mode, then with args.ceiling the ceiling) on
    config `name`, alternating so that a slow spell of a shared machine hits all of them;
    returns (results, peer results, ceiling or None), each the median of its rounds
    (combine_rounds, add_ceiling)."""
    peer_rounds, mode_rounds, ceiling_rounds = [[] for _ in peers], [[] for _ in modes], []
    for round_index in range(args.rounds):
        if args.rounds > 1:
            print(f"{name}: round {round_index + 1} of {args.rounds}", flush=True)
        # Peers first, so each of the project's lines can show its ratio as it is printed.
        for peer, rounds in zip(peers, peer_rounds):
            rounds.append(run_peer(args, peer, name))
            print(describe_peer(rounds[-1]), flush=True)
        for mode, rounds in zip(modes, mode_rounds):
            rounds.append(measure_in_child(args, name, mode))
            add_ratios(rounds[-1], [r[-1] for r in peer_rounds])
            print(describe_result(rounds[-1]), flush=True)
        if args.ceiling:
            ceiling_rounds.append(run_ceiling(name))
            print(describe_ceiling(ceiling_rounds[-1]), flush=True)
    name_peers = [combine_rounds(rounds) for rounds in peer_rounds]
    name_results = []
    for rounds in mode_rounds:
        result = combine_rounds(rounds)
        if "error" not in result:
            add_ratios(result, name_peers)
        name_results.append(result)
    return name_results, name_peers, add_ceiling(name_results, ceiling_rounds)


def combine_rounds(rounds):
    """One measurement's rounds as one result: the median of each speed and time, the
    largest peak RSS, and with more than one round each round's training words/s and
    ratio. A failed round (no train_wps) is the result."""
    failed = [r for r in rounds if r.get("train_wps") is None or "error" in r]
    if failed or len(rounds) == 1:
        return (failed or rounds)[0]
    combined = dict(rounds[-1])
    for key in ("train_wps", "eval_wps", "stream_eval_seconds"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        combined[key] = statistics.median(values) if values else None
    combined["peak_rss_mb"] = max(r["peak_rss_mb"] for r in rounds)
    combined["rounds_train_wps"] = [r["train_wps"] for r in rounds]
    ratios = [r.get("ratio_to_fastest_peer") for r in rounds]
    if all(ratio is not None for ratio in ratios):
        combined["rounds_ratio_to_fastest_peer"] = ratios
    return combined


# -------------------- ceiling

@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product of a training step: [m, k] x [k, n], run `count` times per step."""
    name: str
    m: int
    k: int
    n: int
    count: int
    in_eval: bool  # also run by a forward-only (evaluation) step
    serial: bool  # one per time step, each waiting for the last (the recurrence)

    @property
    def flops(self):
        return 2 * self.m * self.k * self.n * self.count


def step_products(config):
    """Every matrix product of one training step of `config`, the way fused mode runs it:
    input projections, weight gradients and input gradients over all time steps at once,
    the recurrent products one time step at a time. Elementwise work is not counted."""
    b, h, v, layers = config.batch_size, config.hidden_size, config.vocab_size, config.num_layers
    n, t = b * config.num_steps, config.num_steps
    return [
        Product("LSTM input projection", n, h, 4 * h, layers, True, False),
        Product("LSTM recurrent, per step", b, h, 4 * h, layers * t, True, True),
        Product("softmax", n, h, v, 1, True, False),
        Product("softmax d(weights)", h, n, v, 1, False, False),
        Product("softmax d(outputs)", n, v, h, 1, False, False),
        Product("LSTM recurrent backward, per step", b, 4 * h, h, layers * t, False, True),
        Product("LSTM d(kernel)", 2 * h, n, 4 * h, layers, False, False),
        Product("LSTM d(inputs)", n, 4 * h, h, layers, False, False),
    ]


def _recurrent_input(out, k):
    """A per-step product's output [m, n] -> the next step's input [m, k], from every
    column (so no part of the product can be left out): n = r * k summed over its r
    blocks, or k = r * n tiled r times; through tanh, as h_t comes from the cell."""
    m, n = out.shape
    if n % k == 0:
        return tf.tanh(tf.reduce_sum(tf.reshape(out, [m, n // k, k]), axis=1))
    return tf.tanh(tf.tile(out, [1, k // n]))


def _product_function(product, transposed, chain):
    """An XLA-compiled (a, w) -> a' running `chain` products [m, k] x [k, n] in a row, so
    the call's own cost is spread over them: per-step products each feed the next one
    (_recurrent_input), as h_t feeds step t + 1; the others wait for the last one's
    corner, one cheap pass over a (3% of the small softmax's d(outputs), the worst case).
    With `transposed`, w comes as [n, k], multiplied with its rows contracted (what
    rnn/fused.py's _per_step_matmul does for large weights)."""

    @tf.function(jit_compile=True)
    def run(a, w):
        for _ in range(chain):
            out = tf.matmul(a, w, transpose_b=transposed)                   # [m, n]
            a = _recurrent_input(out, product.k) if product.serial else a + out[:1, :1]
        return a
    return run


def _chain_length(product):
    """Products per timed call: enough that the call's own cost (~0.3 ms) hardly counts."""
    return 32 if product.serial else 8


def _timed_calls(run, a, w, min_seconds):
    """Seconds per call of run(a, w), over calls for at least min_seconds."""
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        result = run(a, w)
        calls += 1
    result.numpy()  # waits for the last call
    return (time.perf_counter() - start) / calls


def time_products(products, min_seconds=0.3, sweeps=3):
    """Seconds of one of each product: the fastest over `sweeps` sweeps through all of them
    (so a slow spell of a shared machine hits one sweep, not one product) of w as is and
    w transposed, each timed for min_seconds over calls of _chain_length products."""
    runs = []  # (index of the product, compiled chain, a, w)
    for index, product in enumerate(products):
        a = tf.random.uniform([product.m, product.k], -1.0, 1.0)
        for transposed in (False, True):
            shape = [product.n, product.k] if transposed else [product.k, product.n]
            w = tf.random.uniform(shape, -1.0, 1.0) * (2.0 / product.k ** 0.5)
            run = _product_function(product, transposed, _chain_length(product))
            run(a, w).numpy()  # compiles
            runs.append((index, run, a, w))
    best = [float("inf")] * len(products)
    for _ in range(sweeps):
        for index, run, a, w in runs:
            seconds = _timed_calls(run, a, w, min_seconds) / _chain_length(products[index])
            best[index] = min(best[index], seconds)
    return best


def ceiling(config, seconds_per_product):
    """(train, eval) words/s if every product of a step ran at its measured speed and
    nothing else took any time: words per step over the summed product seconds."""
    products = step_products(config)
    words = config.batch_size * config.num_steps
    train = sum(p.count * s for p, s in zip(products, seconds_per_product))
    evaluation = sum(p.count * s for p, s in zip(products, seconds_per_product) if p.in_eval)
    return words / train, words / evaluation


def measure_ceiling(name, min_seconds, sweeps):
    """Config `name`'s ceiling as a dict: each product's speed, train and eval words/s."""
    config = configs.get_config(name)
    products = step_products(config)
    seconds = time_products(products, min_seconds, sweeps)
    train_wps, eval_wps = ceiling(config, seconds)
    words = config.batch_size * config.num_steps
    return {"config": name, "mflop_per_word": sum(p.flops for p in products) / words / 1e6,
            "train_wps": train_wps, "eval_wps": eval_wps,
            "products": [{"product": p.name, "shape": [p.m, p.k, p.n], "per_step": p.count,
                          "ms_per_step": 1e3 * p.count * s,
                          "gflops": p.flops / p.count / s / 1e9}
                         for p, s in zip(products, seconds)]}


def ceiling_command(args):
    """Prints each config's ceiling and its products as measured; the last line is JSON."""
    names = parse_configs(args.configs)
    if not args.min_seconds > 0 or args.sweeps < 1:
        raise BenchmarkError(f"--min_seconds must be > 0 and --sweeps >= 1, got "
                             f"{args.min_seconds} and {args.sweeps}")
    results = []
    for name in names:
        result = measure_ceiling(name, args.min_seconds, args.sweeps)
        results.append(result)
        print(f"{name}: ceiling {result['train_wps']:,.0f} train words/s, "
              f"{result['eval_wps']:,.0f} eval words/s "
              f"({result['mflop_per_word']:.1f} MFLOP per trained word)", flush=True)
        for row in result["products"]:
            print(f"  {row['product']:34s} {'x'.join(map(str, row['shape'])):>17s} "
                  f"x{row['per_step']:<3d} {row['gflops']:6.0f} GFLOPS "
                  f"{row['ms_per_step']:8.2f} ms/step", flush=True)
    print(json.dumps(dict(host_info(), command="ceiling", results=results)), flush=True)
    return 0


# -------------------- perplexity

_WALL_FILE = "benchmark_wall.json"  # wall seconds of this script's driver runs, summed over resumes


def _add_wall_seconds(save_path, seconds):
    path = os.path.join(save_path, _WALL_FILE)
    total = seconds
    if os.path.isfile(path):
        with open(path) as f:
            total += json.load(f).get("wall_seconds", 0.0)
    with open(path, "w") as f:
        json.dump({"wall_seconds": total}, f)


def _driver_command(name, save_path, data_path, extra):
    return [sys.executable, os.path.join(REPO, "ptb_word_lm.py"), f"--model={name}",
            f"--save_path={save_path}", f"--data_path={data_path}", *extra]


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


def collect_run(name, save_path, train_ids):
    """The table row's figures from save_path/metrics.json, or None if there is none.

    Training words/s = epochs * epoch_size * batch_size * num_steps / sum of the
    epochs' train_seconds; epoch_size comes from reader.ptb_producer on
    `train_ids`, which must be the data the run trained on.
    """
    path = os.path.join(save_path, "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    config = configs.from_dict(metrics["config"])
    epochs = metrics.get("epochs", [])
    batches = reader.ptb_producer(train_ids, config.batch_size, config.num_steps)
    words = len(epochs) * batches.epoch_size * config.batch_size * config.num_steps
    train_seconds = sum(e["train_seconds"] for e in epochs)
    wall_path = os.path.join(save_path, _WALL_FILE)
    wall = None
    if os.path.isfile(wall_path):
        with open(wall_path) as f:
            wall = json.load(f).get("wall_seconds")
    last = epochs[-1] if epochs else {}
    return {"model": name, "epochs": len(epochs), "max_epochs": config.max_max_epoch,
            "train_perplexity": last.get("train_perplexity"),
            "valid_perplexity": last.get("valid_perplexity"),
            "test_perplexity": metrics.get("test_perplexity"),
            "train_seconds": train_seconds, "wall_seconds": wall,
            "train_wps": words / train_seconds if train_seconds > 0 else None}


def _duration(seconds):
    return _DASH if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def perplexity_table(rows):
    """Markdown: one row per run, final epoch's train/valid perplexity and the exact test one."""
    lines = ["| model | epochs | train ppl | valid ppl | test ppl | train time | wall time "
             "| train wps |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['epochs']}/{r['max_epochs']} "
                     f"| {_num(r['train_perplexity'], '{:.2f}')} "
                     f"| {_num(r['valid_perplexity'], '{:.2f}')} "
                     f"| {_num(r['test_perplexity'], '{:.2f}')} "
                     f"| {_duration(r['train_seconds'])} | {_duration(r['wall_seconds'])} "
                     f"| {_num(r['train_wps'])} |")
    return "\n".join(lines)


def perplexity(args, extra):
    names = parse_configs(args.configs)
    check_data(args.data_path)
    if args.collect_only and extra:
        raise BenchmarkError(f"--collect_only trains nothing, so driver flags make no sense: "
                             f"{' '.join(extra)}")
    save_paths = {name: os.path.abspath(os.path.join(args.root, name)) for name in names}
    if args.dry_run:
        for name in names:
            action = ("collect" if args.collect_only else
                      " ".join(_driver_command(name, save_paths[name], args.data_path, extra)))
            print(f"{name}: {action}; then tabulate {save_paths[name]}/metrics.json")
        return 0
    failed = False
    if not args.collect_only:
        for name in names:
            failed |= not run_driver(name, save_paths[name], args.data_path, extra)
    train_ids = reader.load_corpus(args.data_path).train
    rows = []
    for name in names:
        row = collect_run(name, save_paths[name], train_ids)
        if row is None:
            print(f"{name}: no metrics.json in {save_paths[name]}; not in the table",
                  file=sys.stderr)
        else:
            rows.append(row)
    table = perplexity_table(rows)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            f.write(table + "\n")
    return 1 if failed or not rows else 0


# -------------------- command line

def _add_common(parser):
    parser.add_argument("--data_path", default=reader.DEFAULT_DATA_PATH,
                        help="directory with ptb.{train,valid,test}.txt (default: %(default)s)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print what would run, run nothing")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{throughput,perplexity,ceiling}")
    tp = sub.add_parser("throughput", allow_abbrev=False,
                        help="training/evaluation words/s and peak memory per config and mode")
    _add_common(tp)
    tp.add_argument("--configs", default="small",
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    tp.add_argument("--rnn_modes", default="basic,block",
                    help="comma list of basic,block,fused,cudnn,auto, each optionally +xla")
    tp.add_argument("--xla", default="0", help="comma list of 0/1 crossed with bare --rnn_modes")
    tp.add_argument("--warmup", type=int, default=20, help="untimed steps first (tracing)")
    tp.add_argument("--steps", type=int, default=300, help="timed training steps")
    tp.add_argument("--rounds", type=int, default=1,
                    help="measure every peer and mode this many times, alternating; report "
                         "medians (and each round's ratio)")
    tp.add_argument("--eval_steps", type=int, default=None,
                    help="timed eval steps (default: --steps)")
    tp.add_argument("--stream_eval", action="store_true",
                    help="also time the exact one-stream test perplexity")
    tp.add_argument("--ceiling", action="store_true",
                    help="also measure each config's matrix-product ceiling every round and "
                         "report each mode's fraction of its median")
    tp.add_argument("--override", action="append", default=[], help="config key=value, repeatable")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--peers", default="", help="comma list of keras,torch")
    tp.add_argument("--peer_dir", default=DEFAULT_PEER_DIR,
                    help="directory of keras_peer.py and torch_peer.py")
    tp.add_argument("--torch_python", default=DEFAULT_TORCH_PYTHON)

    pp = sub.add_parser("perplexity", allow_abbrev=False,
                        help="train configs with ptb_word_lm.py and tabulate their perplexities; "
                             "unknown flags are passed to the driver")
    _add_common(pp)
    pp.add_argument("--configs", default="small,medium,large")
    pp.add_argument("--root", default="runs", help="save_path of config X is <root>/X")
    pp.add_argument("--collect_only", action="store_true",
                    help="tabulate existing <root>/<config>/metrics.json, train nothing")
    pp.add_argument("--output", help="also write the Markdown table here")

    cp = sub.add_parser("ceiling", allow_abbrev=False,
                        help="the words/s a step would reach if its matrix products ran at the "
                             "speed measured for each shape and nothing else took time")
    cp.add_argument("--configs", default="small,medium,large",
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    cp.add_argument("--min_seconds", type=float, default=0.3,
                    help="time each product and layout for at least this long per sweep")
    cp.add_argument("--sweeps", type=int, default=3,
                    help="sweeps through every product; each product's fastest counts")

    mp = sub.add_parser("_measure", allow_abbrev=False)  # one measurement, in the child process
    mp.add_argument("--config", required=True)
    mp.add_argument("--rnn_mode", required=True, choices=RNN_MODES)
    mp.add_argument("--xla", type=int, choices=(0, 1), default=0)
    mp.add_argument("--warmup", type=int, required=True)
    mp.add_argument("--steps", type=int, required=True)
    mp.add_argument("--eval_steps", type=int, required=True)
    mp.add_argument("--data_path", required=True)
    mp.add_argument("--seed", type=int, default=0)
    mp.add_argument("--override", action="append", default=[])
    mp.add_argument("--stream_eval", action="store_true")
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "perplexity":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "_measure":
        args.xla = bool(args.xla)
        return _measure_main(args)
    try:
        if args.command == "throughput":
            return throughput(args)
        if args.command == "ceiling":
            return ceiling_command(args)
        return perplexity(args, [a for a in extra if a != "--"])
    except (BenchmarkError, configs.ConfigError, reader.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
