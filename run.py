"""The resumable training run: epochs of training and validation, then the test; reads no flags.

    run.train_and_evaluate(config, corpus, "runs/small", run.RunOptions(seed=0))

The driver (ptb_word_lm.py) and the tests call train_and_evaluate in-process.
Rerunning it on the same save_path resumes from the newest checkpoint.
"""

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from typing import Optional

import averaging
import checkpoints
import configs
import distribute
import export
import files
import host
import interrupts as interrupts_lib
import model as model_lib
import monitoring
import precision as precision_lib
import reader
import training
from errors import UserError
from interrupts import Stopped
from rnn import kernels, loop_forms

_INT64_RANGE = (-(1 << 63), (1 << 63) - 1)
PROGRESS = ("plain", "tty")
STRATEGIES = distribute.STRATEGIES
METRICS_FILE = "metrics.json"


class RunError(UserError):
    """A run option that cannot work, or a run file that cannot be written."""


def check_seed(seed):
    """Raises RunError unless seed is an integer TensorFlow's int64 seeds can hold."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunError(f"seed must be an integer, got {seed!r}")
    if not _INT64_RANGE[0] <= seed <= _INT64_RANGE[1]:
        raise RunError(f"seed {seed} is outside the 64-bit range [-2**63, 2**63 - 1]; "
                       f"pick a smaller seed")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run a training (the config says what to train); checked when made."""

    seed: int = 0  # initial weights and dropout masks
    rnn_mode: str = kernels.AUTO  # a name of rnn/kernels.py's table, or auto
    xla: Optional[bool] = None  # compile the steps with XLA; None: the kernel's default
    checkpoint_every_minutes: float = 10.0  # also save this often mid-epoch; 0: off
    checkpoint_every_steps: int = 0  # also save every N steps; 0: off
    keep_checkpoints: int = 3  # newest checkpoints kept (the best is kept apart)
    progress: str = "plain"  # plain: the tutorial's lines; tty: one redrawn line
    export_dir: Optional[str] = None  # write a SavedModel here after the test
    max_minutes: Optional[float] = None  # stop training after this many minutes of epochs, then test
    # Data parallel (distribute.py): none, mirrored, multi_worker (TF_CONFIG), or auto
    # (multi_worker when TF_CONFIG is set, else none). The global batch stays batch_size.
    strategy: str = "none"
    num_cpu_replicas: int = 0  # mirrored over N logical CPU devices (tests); 0: the GPUs
    collective_timeout_seconds: float = 300.0  # a collective waiting longer fails the run
    connect_timeout_seconds: float = 120.0  # multi_worker: wait this long for every worker
    precision: str = precision_lib.FLOAT32  # of the training step's large products

    def __post_init__(self):
        check_seed(self.seed)
        if self.max_minutes is not None and not (
                isinstance(self.max_minutes, (int, float)) and math.isfinite(self.max_minutes)
                and self.max_minutes > 0):
            raise RunError(f"max_minutes must be > 0 (leave it unset for no limit), got "
                           f"{self.max_minutes!r}")
        if not (isinstance(self.checkpoint_every_minutes, (int, float))
                and math.isfinite(self.checkpoint_every_minutes)
                and self.checkpoint_every_minutes >= 0):
            raise RunError(f"checkpoint_every_minutes must be >= 0 (0: off), got "
                           f"{self.checkpoint_every_minutes!r}")
        if self.checkpoint_every_steps < 0:
            raise RunError(f"checkpoint_every_steps must be >= 0 (0: off), got "
                           f"{self.checkpoint_every_steps}")
        if self.keep_checkpoints < 1:
            raise RunError(f"keep_checkpoints must be >= 1 (a resume needs one), got "
                           f"{self.keep_checkpoints}")
        if self.progress not in PROGRESS:
            raise RunError(f"progress must be one of {', '.join(PROGRESS)}, got "
                           f"{self.progress!r}")
        try:
            distribute.check_options(self.strategy, self.num_cpu_replicas,
                                     self.collective_timeout_seconds,
                                     self.connect_timeout_seconds)
        except distribute.DistributeError as e:
            raise RunError(str(e)) from None
        rnn_mode = kernels.resolve(self.rnn_mode)
        # auto resolves here without the config (checked again in _open_run); strategy auto
        # by TF_CONFIG, as create() will, so that nothing joins or locks first.
        precision_lib.check(self.precision, rnn_mode, kernels.jit_compile(rnn_mode, self.xla),
                            distribute.resolve(self.strategy))


def training_memory_bytes(config):
    """A lower bound of the memory one training step needs, in bytes (float32).

    Weights and their gradients (2x the parameters), the logits with their
    softmax and gradient (3 x batch x steps x vocab) and the LSTM activations
    kept for the backward pass (about 12 x layers x steps x batch x hidden).
    """
    h, v, layers = config.hidden_size, config.vocab_size, config.num_layers
    parameters = 2 * v * h + v + layers * (8 * h * h + 4 * h)
    words = config.batch_size * config.num_steps
    return 4 * (2 * parameters + 3 * words * v + 12 * layers * words * h)


def check_memory(config, available=None):
    """Raises RunError before anything is built if a training step cannot fit in memory."""
    available = available or host.usable_memory_bytes()
    needed = training_memory_bytes(config)
    if needed > available:
        raise RunError(f"the model needs at least {needed / 2**30:,.1f} GiB to train "
                       f"(hidden_size {config.hidden_size}, {config.num_layers} layers, vocabulary "
                       f"{config.vocab_size}) but this process may use {available / 2**30:,.1f} "
                       f"GiB (the machine's memory, or its cgroup's limit if lower); "
                       f"lower hidden_size, num_layers, batch_size or num_steps")


def write_json(path, obj):
    """Atomically replaces path with obj as JSON (non-finite numbers as null).

    Raises:
      RunError: the file cannot be written (the old file, if any, is kept).
    """
    obj = json.loads(json.dumps(obj), parse_constant=lambda name: None)  # inf/nan -> null
    try:
        # One name for the temporary: the run's lock keeps other writers out.
        files.replace_text(path, json.dumps(obj, indent=2, allow_nan=False),
                           tmp_path=f"{path}.tmp")
    except OSError as e:
        raise RunError(f"cannot write {path}: {e.strerror}; free space or fix permissions and "
                       f"rerun (training resumes from the last checkpoint)") from None


_OWN_DIRS = ("best", "tensorboard")  # a run's directories inside its save_path


def _check_export_dir(export_dir, save_path):
    """Raises RunError if the export after training would replace the run's own files."""
    if not export_dir:
        return
    export_dir, save_path = os.path.realpath(export_dir), os.path.realpath(save_path)
    own = [os.path.join(save_path, name) for name in _OWN_DIRS]
    if export_dir in own or os.path.commonpath([export_dir, save_path]) == export_dir:
        raise RunError(f"export_dir {export_dir} would replace the run's own files in save_path "
                       f"{save_path}; choose a directory outside it (or a new one inside it)")


def _summaries(run):
    """The chief's TensorBoard scalars (a resumed run's steps already there not again)."""
    if not run.replicas.is_chief:
        return _NoSummaries()
    return monitoring.Summaries(os.path.join(run.save_path, _OWN_DIRS[1]),
                                resumed=int(run.ts.global_step.numpy()) > 0)


def _check_not_in_another_run(save_path):
    """Raises RunError if save_path is or lies in another run's best/ or tensorboard/:
    training there would delete that run's best snapshots, and its lock does not cover them."""
    head, tail = os.path.split(os.path.realpath(save_path))
    while tail:
        if tail in _OWN_DIRS and os.path.isfile(os.path.join(head, checkpoints.LOCK_FILE)):
            raise RunError(f"save_path {save_path} is inside {os.path.join(head, tail)}, the "
                           f"{tail}/ of the run in {head}; choose a directory outside that run")
        head, tail = os.path.split(head)


def _trained_seconds(history):
    """Seconds of training in the recorded epochs (not the epoch in progress)."""
    return sum(entry["train_seconds"] for entry in history)


class _RunHooks(training.EpochHooks):
    """Between the steps of an epoch: progress, TensorBoard, periodic checkpoints, signals,
    the time budget."""

    def __init__(self, progress, summaries, checkpointer, interrupts, options, train_step,
                 epoch_size):
        self.train_step = train_step
        self.epoch_size = epoch_size
        self.progress = progress
        self.summaries = summaries
        self.checkpointer = checkpointer
        self.interrupts = interrupts
        self.options = options
        self._last_save = time.monotonic()
        self._deadline = math.inf
        self.epoch_start = None  # when the epoch would have started, run without a break
        self.stopped_by_signal = False  # a signal to this worker or (agreed) to another

    def start_epoch(self, trained_seconds, resumed_seconds=0.0):
        """The epoch goes on now, after `trained_seconds` of training in earlier epochs and
        `resumed_seconds` in this one before the snapshot it resumes from."""
        self.stopped_by_signal = False
        self.epoch_start = time.monotonic() - resumed_seconds
        if self.options.max_minutes is not None:
            self._deadline = self.epoch_start + 60 * self.options.max_minutes - trained_seconds

    @property
    def out_of_time(self):
        return time.monotonic() >= self._deadline

    def _save_due(self, ts):
        """A signal asks for a snapshot, or a periodic one is due (not on the epoch's last
        step: the epoch's end saves anyway)."""
        if self.interrupts.signum is not None:
            return True
        every_minutes, every_steps = (self.options.checkpoint_every_minutes,
                                      self.options.checkpoint_every_steps)
        periodic = ((every_minutes > 0 and time.monotonic() - self._last_save > 60 * every_minutes)
                    or (every_steps > 0 and int(ts.global_step.numpy()) % every_steps == 0))
        return periodic and not self._at_epoch_end(ts)

    def _at_epoch_end(self, ts):
        return int(ts.step.numpy()) == self.epoch_size

    def after_step(self, ts, outputs):
        self.interrupts.phase = "training"  # a step has run: a signal now saves, then stops
        self.progress.tick(ts)
        # With several workers, all save and stop at the same step (see distribute.py).
        save_due = self._save_due(ts)
        if save_due:  # the interval restarts with the wish: with several workers the agreed
            self.saved()  # save comes a step later, and must not be wished again then
        save, stop_by_signal, out_of_time = self.train_step.agree(
            outputs, save_due, self.interrupts.signum is not None, self.out_of_time)
        # A save agreed on the epoch's last step (wished a step before), or as the budget
        # runs out, is left to the epoch's end, which saves anyway.
        if stop_by_signal or (save and not out_of_time and not self._at_epoch_end(ts)):
            ts.check_finite()
            self.checkpointer.set_epoch_seconds(time.monotonic() - self.epoch_start)
            self.checkpointer.save()
            self.saved()
        self.stopped_by_signal = stop_by_signal
        return stop_by_signal or out_of_time

    def saved(self):
        """A snapshot was just written: the next periodic one is due a whole interval later."""
        self._last_save = time.monotonic()

    def report(self, ts, fraction, words_per_second, outputs):
        self.interrupts.phase = "training"  # a report comes after its step, before after_step
        self.progress.report(ts, fraction, words_per_second)
        self.summaries.write(int(ts.global_step.numpy()), {
            "train/perplexity": ts.epoch_perplexity(), "train/learning_rate": ts.lr.numpy(),
            "train/grad_norm": outputs[1], "train/words_per_second": words_per_second})


class _NoSummaries:
    """A non-chief worker's TensorBoard: nothing written."""

    def write(self, step, values):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


@dataclasses.dataclass
class _Run:
    """One opened run directory: the state, its checkpointer and where results go."""

    config: configs.Config
    corpus: reader.Corpus
    save_path: str
    options: RunOptions
    ts: training.TrainState
    checkpointer: checkpoints.Checkpointer
    jit_compile: bool
    replicas: distribute.Replicas
    summaries: monitoring.Summaries = None
    history: list = None
    epoch_seconds: float = 0.0  # trained in the epoch the restored snapshot stopped within

    @property
    def saved_in(self):
        """Where the run's checkpoints are, as the stop message says it."""
        return self.save_path if self.replicas.is_chief else "the chief's save_path (worker 0)"

    @property
    def metrics_path(self):
        return os.path.join(self.save_path, METRICS_FILE)

    def metrics(self, **extra):
        """What metrics.json holds: the config, the parameter count, the text's hash (which
        corpus the epochs' words are of), the epochs, and extra."""
        parameters = sum(int(v.shape.num_elements()) for v in self.ts.model.trainable_variables)
        return {"config": configs.to_dict(self.config), "parameters": parameters,
                "data_hash": self.corpus.data_hash, "epochs": self.history, **extra}

    def write_metrics(self, **extra):
        if self.replicas.is_chief:
            write_json(self.metrics_path, self.metrics(**extra))


def _batches(corpus, split, config):
    """The corpus's `split` ("train" or "valid") in the config's batch layout; a DataError
    names the split that is too short for it."""
    try:
        return reader.ptb_producer(getattr(corpus, split), config.batch_size, config.num_steps)
    except reader.DataError as e:
        raise reader.DataError(f"the {split} split: {e}") from None


def _auto_reason(config):
    """What in `config` steers --rnn_mode=auto's choice of kernel, for a message."""
    if config.cell != "lstm":
        return f"cell={config.cell}"
    if config.recurrent_keep_prob < 1.0:
        return f"recurrent_keep_prob={config.recurrent_keep_prob:g}"
    return "this config"


def _check_precision(config, options):
    """Raises PrecisionError before anything is written if options.precision cannot train
    with the kernel --rnn_mode=auto picks for this config (RunOptions could not know it)."""
    rnn_mode = model_lib.resolve_rnn_mode(config, options.rnn_mode)
    precision_lib.check(options.precision, rnn_mode, kernels.jit_compile(rnn_mode, options.xla),
                        distribute.resolve(options.strategy),
                        _auto_reason(config) if options.rnn_mode == kernels.AUTO else None)


def _open_run(config, corpus, save_path, options, epoch_size, replicas):
    """Builds the TrainState and restores this run's newest checkpoint in save_path.

    With several workers the chief restores and the others receive its values.
    """
    rnn_mode = model_lib.resolve_rnn_mode(config, options.rnn_mode)  # auto: by the cell
    jit_compile = kernels.jit_compile(rnn_mode, options.xla)
    with replicas.scope():
        ts = training.TrainState(config, rnn_mode=rnn_mode, seed=options.seed,
                                 precision=options.precision)
    checkpointer = replicas.checkpointer(lambda: checkpoints.Checkpointer(
        save_path, ts, checkpoints.run_info(config, options.seed, corpus),
        options.keep_checkpoints))
    restored = checkpointer.restore()
    if not restored:
        ts.reset_epoch(0)
    replicas.sync_from_chief(ts.variables)
    if restored:
        print(f"Resuming from {restored}: epoch {int(ts.epoch.numpy()) + 1}, "
              f"step {int(ts.step.numpy())} of {epoch_size}")
    vocab_path = os.path.join(save_path, checkpoints.VOCAB_FILE)
    try:
        if replicas.is_chief:
            # One name for the temporary, as metrics.json's: the lock keeps other writers out.
            reader.save_vocab(corpus.word_to_id, vocab_path, tmp_path=f"{vocab_path}.tmp")
    except OSError as e:
        raise RunError(f"cannot write {vocab_path}: {e.strerror}; free space or fix "
                       f"permissions and rerun") from None
    print(f"Config: {json.dumps(configs.to_dict(config))}")
    parameters = sum(int(v.shape.num_elements()) for v in ts.model.trainable_variables)
    print(f"rnn_mode: {rnn_mode}  xla: {jit_compile}  precision: "
          f"{precision_lib.describe(options.precision)}  parameters: {parameters:,}")
    if rnn_mode == "fused" and jit_compile:  # chosen per host (rnn/loop_forms.py)
        print("per-step recurrent products: " + loop_forms.per_step_forms(
            config.hidden_size, own_loops=training.split_step(ts)))
    if replicas.strategy:
        print(f"strategy: {replicas.name}  rows per replica: "
              f"{config.batch_size // replicas.num_replicas} of {config.batch_size}")
    return _Run(config, corpus, save_path, options, ts, checkpointer, jit_compile, replicas,
                history=checkpointer.get_history(), epoch_seconds=checkpointer.epoch_seconds())


def _make_train_step(run):
    """The training step; with NT-ASGD it also folds each step's weights into the average."""
    ts = run.ts
    wrap = None
    if ts.average is not None:
        wrap = lambda step: averaging.with_averaging(ts.average, ts.model, step)  # noqa: E731
    return run.replicas.make_train_step(ts, jit_compile=run.jit_compile, wrap=wrap)


def _record_epoch(run, epoch, fraction, train_ppl, valid_ppl, seconds):
    """Appends the epoch to the history; a resumed partial epoch replaces its earlier entry,
    whose validation stays as part_valid_perplexity (its snapshot may be the best/ one)."""
    history = run.history
    entry = {"epoch": epoch + 1, "learning_rate": float(run.ts.lr.numpy()),
             "train_perplexity": train_ppl, "valid_perplexity": valid_ppl,
             "train_seconds": seconds}
    if history and history[-1]["epoch"] == epoch + 1 and history[-1].get("fraction", 1) < 1:
        part = history.pop()
        entry["train_seconds"] += part["train_seconds"]
        entry["part_valid_perplexity"] = _best_validation([part])
    if fraction < 1:
        entry["fraction"] = fraction  # stopped by --max_minutes
    history.append(entry)


def _best_validation(history):
    """The lowest validation perplexity in history, budget-stopped parts' included."""
    return min((entry.get(key, math.inf) for entry in history
                for key in ("valid_perplexity", "part_valid_perplexity")), default=math.inf)


def _maybe_start_averaging(run):
    """NT-ASGD: averaging starts after the epoch validation stops improving."""
    ts, config = run.ts, run.config
    if ts.average is None or ts.average.active:
        return
    if averaging.should_start([h["valid_perplexity"] for h in run.history], config.asgd_nonmono):
        ts.average.start(ts.model)
        print(f"Averaging the weights from here on (NT-ASGD: validation worse than the best "
              f"before the last {config.asgd_nonmono} epochs)", flush=True)


def _train_epochs(run, train_batches, valid_batches, interrupts):
    """The tutorial's loop from wherever the run stands: train, validate, checkpoint, per epoch.

    Ends after max_max_epoch epochs, or mid-epoch once options.max_minutes of
    training are spent (then validated and checkpointed as an epoch end).
    """
    ts, config = run.ts, run.config
    progress = monitoring.make_progress(run.options.progress == "tty", train_batches, sys.stdout)
    train_step = _make_train_step(run)
    hooks = _RunHooks(progress, run.summaries, run.checkpointer, interrupts, run.options,
                      train_step, train_batches.epoch_size)
    evaluate = run.replicas.make_evaluate(ts.model, config.batch_size, config.num_steps,
                                          jit_compile=run.jit_compile)
    while int(ts.epoch.numpy()) < config.max_max_epoch:
        resumed, run.epoch_seconds = run.epoch_seconds, 0.0  # the next epoch starts afresh
        hooks.start_epoch(_trained_seconds(run.history), resumed)
        epoch = int(ts.epoch.numpy())
        if run.replicas.any_worker(hooks.out_of_time):
            # A snapshot mid-epoch (its seconds recorded: only the chief has them) whose time
            # used up the budget: that part is validated and recorded as a budget's stop.
            if run.replicas.any_worker(resumed > 0):
                _end_of_epoch(run, hooks, epoch, time.monotonic() - hooks.epoch_start,
                              train_batches.epoch_size, lambda: evaluate(valid_batches))
            break
        print(f"Epoch: {epoch + 1} Learning rate: {ts.lr.numpy():.3f}", flush=True)
        progress.start_epoch(ts)
        try:
            finished = training.run_epoch(ts, train_step, train_batches, hooks)
        finally:
            progress.end_epoch()
        if not finished and hooks.stopped_by_signal:
            raise Stopped(f"Stopped at epoch {epoch + 1} step {int(ts.step.numpy())}; checkpoint "
                          f"saved in {run.saved_in}: run the same command to resume.")
        finished = _end_of_epoch(run, hooks, epoch, time.monotonic() - hooks.epoch_start,
                                 train_batches.epoch_size, lambda: evaluate(valid_batches))
        if run.replicas.any_worker(interrupts.signum is not None):
            raise Stopped(f"Stopped after epoch {epoch + 1}; checkpoint saved in "
                          f"{run.saved_in}: run the same command to resume.")
        if not finished:
            break


def _end_of_epoch(run, hooks, epoch, seconds, epoch_size, validate):
    """Validates, records and checkpoints epoch `epoch`, or the part of it the time budget
    left; returns whether the epoch was finished."""
    ts = run.ts
    ts.check_finite()  # a budget's stop comes between the steps' checks: nothing NaN is saved
    fraction = int(ts.step.numpy()) / epoch_size
    finished = fraction == 1  # the budget may run out on the epoch's last step
    if not finished:
        print(f"Time budget of {run.options.max_minutes:g} minutes spent at epoch {epoch + 1} "
              f"({100 * fraction:.1f}%): validating and testing now", flush=True)
    train_ppl = ts.epoch_perplexity()
    print(f"Epoch: {epoch + 1} Train Perplexity: {train_ppl:.3f}", flush=True)
    with ts.evaluation_weights():
        valid_ppl = validate()
    print(f"Epoch: {epoch + 1} Valid Perplexity: {valid_ppl:.3f}", flush=True)
    best = not run.history or valid_ppl < _best_validation(run.history)  # inf: the first
    _record_epoch(run, epoch, fraction, train_ppl, valid_ppl, seconds)
    if finished:  # NT-ASGD compares whole epochs' validations; a part is replaced on resume
        _maybe_start_averaging(run)
    run.checkpointer.set_history(run.history)
    if finished:
        ts.reset_epoch(epoch + 1)  # the snapshot resumes at the start of the next epoch
    run.checkpointer.save(best=best)
    hooks.saved()
    # After the snapshot: a write only TensorBoard fails (its directory) loses no training.
    run.summaries.write(int(ts.global_step.numpy()), {"valid/perplexity": valid_ppl})
    run.write_metrics()
    return finished


def _test(run, interrupts):
    """The tutorial's test perplexity (one stream, state carried), recorded; then the export.

    One stream cannot be split across replicas: the chief runs it, the other
    workers wait for it (and return None).
    """
    if not run.replicas.is_chief:
        print("(test perplexity: one stream, computed by the chief, worker 0)", flush=True)
        run.replicas.wait_for_chief()
        return None
    start = time.monotonic()
    overlap = training.overlaps_stream_losses(run.ts.model)
    test_ppl = training.stream_perplexity(run.ts.model, run.corpus.test,
                                          jit_compile=run.jit_compile, overlap=overlap)
    print(f"Test Perplexity: {test_ppl:.3f}", flush=True)
    softmax = "beside the next chunk's recurrence" if overlap else "after the recurrence"
    print(f"(test evaluation: {time.monotonic() - start:.1f}s, one stream, state carried; "
          f"softmax {softmax})")
    run.write_metrics(test_perplexity=test_ppl)
    interrupts.phase = "exporting" if run.options.export_dir else "done"  # the test recorded
    run.summaries.write(int(run.ts.global_step.numpy()), {"test/perplexity": test_ppl})
    if run.options.export_dir:
        path = export.export_saved_model(run.ts.model, run.corpus.word_to_id,
                                         run.options.export_dir, run.config)
        print(f"Exported SavedModel to {path}", flush=True)
    run.replicas.release_workers()
    return test_ppl


def train_and_evaluate(config, corpus, save_path, options=RunOptions()):
    """Trains `config` on `corpus` in save_path (resuming what is there), then tests it.

    Prints the tutorial's lines to stdout; writes checkpoints, vocab.txt,
    metrics.json and TensorBoard scalars into save_path. Holds the run
    directory's lock throughout, so a second run on save_path fails.

    Args:
      config: configs.Config whose vocab_size is the corpus's.
      corpus: reader.Corpus (train/valid/test word ids and word_to_id).
      save_path: the run directory (created if missing).
      options: RunOptions.
    Returns:
      dict: the metrics.json content (config, epochs, test_perplexity).
    Raises:
      UserError (one line for the user): a bad config or option, a checkpoint
        of another run, a full disk, divergence, too little memory.
      Stopped: SIGINT/SIGTERM; what was kept is saved.
    """
    check_memory(config)
    _check_precision(config, options)
    _check_not_in_another_run(save_path)
    if distribute.is_chief(options.strategy):  # only the chief exports
        _check_export_dir(options.export_dir, save_path)
    if config.optimizer == "asgd" and distribute.resolve(options.strategy) != "none":
        raise RunError("optimizer asgd (NT-ASGD's weight average) does not run under a "
                       "distribute strategy yet; use strategy none (--strategy=none)")
    # First: logical devices and the multi-worker server must precede TensorFlow's start.
    replicas = distribute.create(options.strategy, config.batch_size, options.num_cpu_replicas,
                                 options.collective_timeout_seconds,
                                 options.connect_timeout_seconds)
    train_batches, valid_batches = (_batches(corpus, split, config) for split in ("train",
                                                                                  "valid"))
    with replicas.lost_peers_as_errors():
        replicas.check_agreement(checkpoints.run_info(config, options.seed, corpus),
                                 options.max_minutes)
        # Only the chief writes save_path; the other workers may not even see it.
        chief = replicas.is_chief
        if chief:
            checkpoints.check_writable(save_path)
        with (checkpoints.lock(save_path) if chief else contextlib.nullcontext()), \
                interrupts_lib.Interrupts(save_path, one_worker=not replicas.cluster) as interrupts:
            run = _open_run(config, corpus, save_path, options, train_batches.epoch_size,
                            replicas)
            with _summaries(run) as run.summaries:
                _train_epochs(run, train_batches, valid_batches, interrupts)
                if run.replicas.any_worker(interrupts.signum is not None):  # nothing trained
                    by = (f"signal {interrupts.signum}" if interrupts.signum is not None
                          else "a signal to another worker")
                    raise Stopped(f"Stopped by {by} before the test; checkpoints are in "
                                  f"{run.saved_in}: run the same command to go on.")
                # The chief tests; the other workers wait for it, with nothing to save.
                interrupts.phase = "testing" if run.replicas.is_chief else "waiting"
                with run.ts.evaluation_weights():
                    test_ppl = _test(run, interrupts)
                interrupts.phase = "done"  # recorded (and exported): a signal now changes nothing
    return run.metrics(test_perplexity=test_ppl)
