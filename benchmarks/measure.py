"""One throughput measurement, in the process that runs it: the library's steps, timed.

The hidden `_measure` command runs `measure` in a fresh process per (config,
mode), so its peak resident memory is its own. The timed steps are the
library's (training.make_train_step driven by training.run_epoch,
training.make_eval_step, training.stream_perplexity), never a copy.
"""

import dataclasses
import json
import re
import resource
import sys
import time

import tensorflow as tf

import configs
import errors
import model as model_lib
import precision as precision_lib
import reader
import training
from benchmarks import common
from rnn import kernels


@dataclasses.dataclass(frozen=True)
class Mode:
    """One way of running the training step: the LSTM kernel (or auto), XLA on or off,
    environment variables set for its process (e.g. XLA_FLAGS), as (name, value) pairs, and
    the precision of the training step's large products (precision.py)."""
    rnn_mode: str
    xla: bool
    env: tuple = ()
    precision: str = precision_lib.FLOAT32

    @property
    def label(self):
        """e.g. fused+xla, fused+xla+bfloat16 (the float32 default unsaid)."""
        return (self.rnn_mode + ("+xla" if self.xla else "")
                + ("" if self.precision == precision_lib.FLOAT32 else "+" + self.precision)
                + env_label(self.env))

    def label_as_run(self, rnn_mode):
        """The label with auto shown as auto(<rnn_mode, the kernel it resolved to>)."""
        if self.rnn_mode != kernels.AUTO:
            return self.label
        return f"auto({rnn_mode})" + self.label[len(kernels.AUTO):]


def env_label(env):
    """" {NAME=value ...}" for a mode's environment variables, "" without any."""
    return " {" + " ".join(f"{k}={v}" for k, v in env) + "}" if env else ""


@dataclasses.dataclass
class Measurement:
    """The figures of one (config, mode); error (None when fine) says why there are none.

    The child fills the figures; the parent (throughput.py) adds the peer ratios,
    the rounds and the ceiling fraction.
    """
    config: str
    mode: str  # Mode.label; auto as auto(<the kernel it chose>)
    rnn_mode: str  # the kernel that ran (auto until resolved)
    xla: bool
    precision: str = precision_lib.FLOAT32  # of the training step's large products
    error: str | None = None
    batch_size: int | None = None
    num_steps: int | None = None
    parameters: int | None = None
    train_steps: int | None = None
    train_seconds: float | None = None
    train_wps: float | None = None
    eval_steps: int | None = None
    eval_seconds: float | None = None
    eval_wps: float | None = None
    stream_eval_seconds: float | None = None  # with --stream_eval
    stream_eval_words: int | None = None
    peak_rss_mb: float | None = None
    # Added by the parent: the peers' words/s on this config and the ratio to the fastest,
    peer_wps: dict = dataclasses.field(default_factory=dict)
    fastest_peer: str | None = None
    ratio_to_fastest_peer: float | None = None
    # each round's figures with --rounds > 1,
    rounds_train_wps: list | None = None
    rounds_ratio_to_fastest_peer: list | None = None
    # and with --ceiling, the config's ceiling and the fraction of it reached.
    ceiling_wps: dict | None = None  # {"train_wps", "eval_wps"[, "*_with_loss" of each]}
    of_ceiling: dict | None = None  # the same keys: our words/s over each

    @classmethod
    def failed(cls, config, mode, error):
        return cls(config=config, mode=mode.label, rnn_mode=mode.rnn_mode, xla=mode.xla,
                   precision=mode.precision, error=error)


def resolve_config(name, overrides, vocab_size):
    """The named config with key=value overrides; vocab_size follows the data, as in the driver.

    Raises:
      ConfigError: a bad override.
      BenchmarkError: an override of vocab_size, which the data sets.
    """
    config = configs.apply_overrides(configs.get_config(name), list(overrides))
    if any(item.partition("=")[0].strip() == "vocab_size" for item in overrides):
        raise common.BenchmarkError("vocab_size follows the data's vocabulary in every "
                                    "measurement; drop --override=vocab_size")
    return configs.apply_overrides(config, {"vocab_size": vocab_size})


class _StepClock(training.EpochHooks):
    """run_epoch hooks that start the clock after `warmup` steps and stop it `steps` later.

    It counts steps in Python, so polling it never waits for the device. The
    clock stops inside the hook, so tearing down the abandoned tf.data iterator is
    not timed.
    """

    def __init__(self, warmup, steps):
        self.warmup, self.total, self.done = warmup, warmup + steps, 0
        self.start = time.perf_counter() if warmup == 0 else None  # warmup 0: tracing is timed
        self.stop = None

    def after_step(self, ts, outputs):
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

    Raises:
      training.Diverged: a step's cost was NaN or infinite.
    """
    train_step = training.make_train_step(ts, jit_compile=jit_compile)
    clock = _StepClock(warmup, steps)
    run_until_stopped(ts, train_step, batches, clock)
    ts.check_finite()
    return clock.stop - clock.start


def run_until_stopped(ts, train_step, batches, clock):
    """Trains until `clock` stops, going round the split again as a new epoch (zero state)."""
    epoch = int(ts.epoch.numpy())
    while training.run_epoch(ts, train_step, batches, clock):
        epoch += 1
        ts.reset_epoch(epoch)


def run_eval_steps(eval_step, batch_iter, state, steps):
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
    state = run_eval_steps(eval_step, batch_iter, model.zero_state(batches.batch_size), warmup)
    start = time.perf_counter()
    run_eval_steps(eval_step, batch_iter, state, steps)
    return time.perf_counter() - start


def _time_stream_eval(model, test_ids, jit_compile):
    start = time.perf_counter()
    # Traces (and under XLA compiles) once, as the driver's does.
    training.stream_perplexity(model, test_ids, jit_compile=jit_compile)
    return time.perf_counter() - start


def measure(name, mode, data_path, overrides=(), warmup=20, steps=300, eval_steps=300,
            stream_eval=False, seed=0):
    """Measures config `name` (overrides applied) in `mode` in this process.

    Returns:
      Measurement, error None.
    Raises:
      errors.UserError (and the library's other user errors): bad data, config,
        kernel for this host or for XLA; training diverged.
      tf.errors.OpError: an op failed to run or compile.
    """
    corpus = reader.load_corpus(data_path)
    config = resolve_config(name, overrides, corpus.vocab_size)
    rnn_mode, jit_compile = check_mode(config, mode)
    ts = training.TrainState(config, rnn_mode=rnn_mode, seed=seed, precision=mode.precision)
    ts.reset_epoch(0)
    train_batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    valid_batches = reader.ptb_producer(corpus.valid, config.batch_size, config.num_steps)
    words_per_step = config.batch_size * config.num_steps
    train_seconds = time_training(ts, train_batches, warmup, steps, jit_compile)
    eval_seconds = time_evaluation(ts.model, valid_batches, warmup, eval_steps, jit_compile)
    stream_seconds = (_time_stream_eval(ts.model, corpus.test, jit_compile) if stream_eval
                      else None)
    return Measurement(
        config=name, mode=mode.label_as_run(rnn_mode),
        rnn_mode=rnn_mode, xla=mode.xla, precision=mode.precision,
        batch_size=config.batch_size, num_steps=config.num_steps,
        parameters=sum(int(tf.size(v)) for v in ts.model.trainable_variables),
        train_steps=steps, train_seconds=train_seconds,
        train_wps=steps * words_per_step / train_seconds,
        eval_steps=eval_steps, eval_seconds=eval_seconds,
        eval_wps=eval_steps * words_per_step / eval_seconds,
        stream_eval_seconds=stream_seconds,
        stream_eval_words=len(corpus.test) - 1 if stream_eval else None,
        peak_rss_mb=common.rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def check_mode(config, mode, environ=None):
    """(the kernel `mode` runs `config` with, whether it compiles with XLA), as the driver
    would choose them; environ: the measuring process's environment (None: this one's).

    Raises:
      errors.UserError (the kernels' and precision's): the mode cannot run the config on
        this host, under its XLA setting or in its precision.
    """
    rnn_mode = model_lib.resolve_rnn_mode(config, mode.rnn_mode)
    jit_compile = kernels.jit_compile(rnn_mode, mode.xla)
    precision_lib.check(mode.precision, rnn_mode, jit_compile, environ=environ)
    return rnn_mode, jit_compile


def command(args, name, mode):
    """The `_measure` command line measuring (config `name`, `mode`) with args' settings."""
    flags = [f"--config={name}", f"--rnn_mode={mode.rnn_mode}", f"--xla={int(mode.xla)}",
             f"--warmup={args.warmup}", f"--steps={args.steps}",
             f"--eval_steps={args.eval_steps or args.steps}", f"--data_path={args.data_path}",
             f"--seed={args.seed}", f"--precision={mode.precision}"]
    flags += [f"--override={item}" for item in args.override]
    if args.stream_eval:
        flags.append("--stream_eval")
    return common.script_command("_measure", *flags)


def run(args):
    """The hidden `_measure` command: one Measurement as the JSON last line, or one error line."""
    try:
        result = measure(args.config, Mode(args.rnn_mode, bool(args.xla),
                                           precision=args.precision), args.data_path,
                         args.override, args.warmup, args.steps, args.eval_steps,
                         args.stream_eval, args.seed)
    except errors.UserError as e:
        sys.exit(f"error: {e}")
    except tf.errors.OpError as e:  # an op failed to run or to compile under XLA
        message = re.sub(r"\[_XlaMustCompile[^\]]*\]", "", e.message.strip().splitlines()[0])
        sys.exit(f"error: {type(e).__name__}: {message}")
    print(json.dumps(dataclasses.asdict(result)), flush=True)
    return 0
