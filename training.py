"""Training and evaluation: LR schedule, tf.function steps, run_epoch, exact stream evaluation."""

import collections
import concurrent.futures
import contextlib
import math
import time
from typing import Callable, NamedTuple

import numpy as np
import tensorflow as tf

import averaging
import host
import model as model_lib
import precision as precision_lib
from errors import UserError


def learning_rate(config, epoch):
    """The tutorial's schedule for 0-based `epoch`: constant for max_epoch epochs, then decays."""
    return config.learning_rate * config.lr_decay ** max(epoch + 1 - config.max_epoch, 0)


def perplexity(mean_cost):
    """exp(mean cost per word); inf where a huge but finite cost overflows a float."""
    try:
        return math.exp(mean_cost)
    except OverflowError:
        return math.inf


class Diverged(UserError, RuntimeError):
    """The training cost became NaN or infinite; the weights hold the last finite step."""


def _state_variables(state, name):
    return tf.nest.map_structure(
        lambda t: tf.Variable(t, trainable=False, name=name), state)


class TrainState(tf.Module):
    """Everything a resumed run needs besides the data: model, schedule position, carried state.

    All of it lives in variables so one tf.train.Checkpoint of this module is a
    complete snapshot, and the training step never returns to the host.
    """

    def __init__(self, config, rnn_mode="auto", seed=0, precision=precision_lib.FLOAT32):
        super().__init__(name="train_state")
        self.config = config
        self.model = model_lib.PTBModel.from_config(config, rnn_mode=rnn_mode, seed=seed,
                                                    precision=precision)
        self.seed = tf.Variable(seed, dtype=tf.int64, trainable=False, name="seed")
        self.lr = tf.Variable(0.0, trainable=False, name="learning_rate")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self.global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        # The running sums of the epoch in progress, so a resumed epoch reports
        # the perplexity an uninterrupted one would.
        self.epoch_cost = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="epoch_cost")
        self.epoch_iters = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_iters")
        # Global step of the first non-finite cost, -1 while all is well.
        self.bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="bad_step")
        self.carried = _state_variables(self.model.zero_state(config.batch_size), "carried")
        # NT-ASGD's average of the weights; only asgd runs have it (and its checkpoint entries).
        self.average = (averaging.WeightAverage(self.model) if config.optimizer == "asgd"
                        else None)

    def evaluation_weights(self):
        """A context in which the model holds the weights to evaluate: the average if one is kept."""
        if self.average is None:
            return contextlib.nullcontext()
        return self.average.swapped_into(self.model)

    def reset_epoch(self, epoch):
        """Starts epoch `epoch` (0-based): schedule LR, zero state and sums."""
        self.epoch.assign(epoch)
        self.step.assign(0)
        self.lr.assign(learning_rate(self.config, epoch))
        self.epoch_cost.assign(0.0)
        self.epoch_iters.assign(0)
        for var, zero in zip(tf.nest.flatten(self.carried),
                             tf.nest.flatten(self.model.zero_state(self.config.batch_size))):
            var.assign(zero)

    def epoch_perplexity(self):
        iters = int(self.epoch_iters.numpy())
        return perplexity(self.epoch_cost.numpy() / iters) if iters else float("nan")

    def check_finite(self):
        """Raises Diverged if any step since the start saw a NaN or infinite cost."""
        bad = int(self.bad_step.numpy())
        if bad >= 0:
            fix = ("lower init_scale: the first step's cost comes from the starting weights, "
                   "before any update" if bad == 0 else
                   "lower learning_rate or max_grad_norm, or resume from the last checkpoint")
            raise Diverged(
                f"training cost became NaN or infinite at epoch {int(self.epoch.numpy()) + 1} "
                f"(global step {bad}); stopped without saving: {fix}")


def _apply_sgd(variables, grads, lr):
    for var, grad in zip(variables, grads):
        if isinstance(grad, tf.IndexedSlices):
            # The embedding's gradient touches only the looked-up rows.
            var.scatter_sub(tf.IndexedSlices(lr * grad.values, grad.indices, grad.dense_shape))
        else:
            var.assign_sub(lr * grad)


def _row_width(size, widest=1024, narrowest=64):
    """The largest divisor of `size` in [narrowest, widest], or None if there is none."""
    for width in range(min(widest, size), narrowest - 1, -1):
        if size % width == 0:
            return width
    return None


def _squared_norm(grad, as_matvec):
    """sum(grad ** 2): of the values, for IndexedSlices (as tf.clip_by_global_norm).

    With as_matvec (for XLA on CPU) the sum is a [size / width, width] x [width]
    product with ones: XLA compiles a fused square-and-sum to a slow loop
    (1.7 ms for the small model's 2M softmax weights, 5.8 ms for medium's 6.5M)
    and that product runs 4-7x faster. Plain TensorFlow's L2Loss is fast already.
    """
    values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
    size = values.shape.num_elements()
    width = _row_width(size) if as_matvec and size else None
    if width is None:
        return 2.0 * tf.nn.l2_loss(values)
    squares = tf.reshape(values * values, [-1, width])                # [size / width, width]
    return tf.reduce_sum(tf.linalg.matvec(squares, tf.ones([width], values.dtype)))


def clip_by_global_norm(grads, clip_norm, as_matvec=False):
    """tf.clip_by_global_norm(grads, clip_norm): the same scaling and the same NaN
    for a non-finite norm, with each squared norm summed as _squared_norm says.

    Returns:
      (clipped grads, the global norm before clipping).
    """
    norm = tf.sqrt(tf.add_n([_squared_norm(grad, as_matvec) for grad in grads]))
    scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)

    def scaled(grad):
        if isinstance(grad, tf.IndexedSlices):
            return tf.IndexedSlices(grad.values * scale, grad.indices, grad.dense_shape)
        return grad * scale
    return [scaled(grad) for grad in grads], norm


def batch_gradients(ts, x, y, state, keep_masks, global_batch_size):
    """The forward and backward pass of `x`'s rows: (cost, grads, final state).

    The cost is the rows' cross-entropy summed over time and divided by
    `global_batch_size`, the whole batch's size: the tutorial's cost when the
    rows are the whole batch, and a replica's share of it (the shares sum to
    it) when they are a data-parallel replica's rows. Gradients are those of
    that cost, the embedding's as IndexedSlices.

    Args:
      x, y: int32 [rows, num_steps].
      state: as model.zero_state(rows): the state after the previous batch.
      keep_masks: the rows' dropout masks, or None without dropout.
      global_batch_size: int, the batch size the cost is averaged over.
    """
    model = ts.model
    variables = model.trainable_variables
    word_losses = _compiled_word_losses if split_step(ts) else model_lib.biased_word_losses
    with tf.GradientTape() as tape:
        outputs, final = model.hidden(x, state, training=True, keep_masks=keep_masks)
        # model.word_losses(outputs, y, training=True), with the loss compiled when split.
        losses = word_losses(model.softmax_product(outputs, training=True), model.softmax_b, y)
        cost = tf.reduce_sum(losses) / global_batch_size
    return cost, tape.gradient(cost, variables), final


# The loss as a program of its own, for a split step (see split_step).
_compiled_word_losses = tf.function(model_lib.biased_word_losses, jit_compile=True)


def split_step(ts):
    """Whether the training step runs as compiled pieces rather than as one XLA program.

    With products in bfloat16 (precision.py): XLA would turn them back into
    float32 ones, so they run outside it, and the LSTM loops (fused_lstm's
    compile_loops) and the loss compile as pieces of the step instead.
    """
    return ts.model.precision != precision_lib.FLOAT32


def apply_gradients(ts, cost, grads, final, as_matvec=False):
    """Clips `grads` by global norm and applies SGD; writes `final` into ts.carried; counts.

    Given the whole batch's cost, gradients and final state (on one device,
    or after the replicas' all-reduce), so every replica applies the same
    update. A non-finite cost or norm leaves every variable untouched and
    records the step in ts.bad_step. Returns the global norm before clipping.
    """
    grads, grad_norm = clip_by_global_norm(grads, ts.config.max_grad_norm, as_matvec)
    finite = tf.math.is_finite(cost) & tf.math.is_finite(grad_norm)

    def apply():
        _apply_sgd(ts.model.trainable_variables, grads, ts.lr)
        tf.nest.map_structure(lambda v, t: v.assign(t), ts.carried, final)
        ts.epoch_cost.assign_add(tf.cast(cost, tf.float64))
        ts.epoch_iters.assign_add(ts.config.num_steps)
        return tf.constant(True)

    def record():
        ts.bad_step.assign(tf.where(ts.bad_step < 0, ts.global_step, ts.bad_step))
        return tf.constant(False)

    tf.cond(finite, apply, record)
    ts.step.assign_add(1)
    ts.global_step.assign_add(1)
    return grad_norm


def draw_masks(ts):
    """The whole batch's dropout masks from (seed, global step), or None without dropout.

    Drawn by the plain kernels (outside XLA, whose Philox is ~3x slower and
    draws other numbers), so XLA on or off trains on the same masks.
    """
    if not ts.model.uses_dropout:
        return None
    return ts.model.dropout_masks(tf.stack([ts.seed, ts.global_step]),
                                  ts.config.batch_size, ts.config.num_steps)


def make_train_step(ts, jit_compile=False):
    """A tf.function that trains on one [batch_size, num_steps] batch, traced once.

    It reads the carried state from `ts.carried` and writes the final state back:
    the state flows from batch to batch, but each call is its own gradient tape,
    so gradients stop at the batch boundary (truncated backprop). A non-finite
    cost leaves every variable untouched and records the step in ts.bad_step.
    Returns (cost, grad_norm). (distribute.py builds the data-parallel step
    from the same two halves, batch_gradients and apply_gradients.) With
    jit_compile the step is one XLA program, or for bfloat16 products a plain
    tf.function of compiled pieces (split_step).
    """
    config = ts.config
    spec = tf.TensorSpec([config.batch_size, config.num_steps], tf.int32)
    one_program = jit_compile and not split_step(ts)

    @tf.function(jit_compile=one_program)
    def compiled_step(x, y, keep_masks):
        cost, grads, final = batch_gradients(ts, x, y, ts.carried, keep_masks, config.batch_size)
        return cost, apply_gradients(ts, cost, grads, final, as_matvec=one_program)

    @tf.function(input_signature=[spec, spec])
    def train_step(x, y):
        return compiled_step(x, y, draw_masks(ts))
    return train_step


def make_eval_step(model, batch_size, num_steps=None, jit_compile=False):
    """A tf.function: (x, y, state) -> (per-word losses float32 [batch, steps], final state).

    No dropout. num_steps None accepts any length with a single trace (under
    XLA, one compilation per distinct length).
    """
    spec = tf.TensorSpec([batch_size, num_steps], tf.int32)
    state_spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, model.zero_state(batch_size))

    @tf.function(input_signature=[spec, spec, state_spec], jit_compile=jit_compile)
    def eval_step(x, y, state):
        outputs, final = model.hidden(x, state, training=False)
        losses = model.word_losses(outputs, y)
        return losses, final
    return eval_step


class EpochHooks:
    """What run_epoch calls back while it trains; subclass and override either method.

    `outputs` is the step's (cost, grad_norm), float32 scalar tensors: reading
    them waits for that step, so a hook that does not need them leaves the
    steps running ahead of the host.
    """

    def after_step(self, ts, outputs):
        """Called after every step; returns True to end the epoch there (signals, limits)."""
        return False

    def report(self, ts, fraction, words_per_second, outputs):
        """Called about ten times an epoch (the tutorial's progress lines) and after the last step."""


def run_epoch(ts, train_step, batches, hooks=None):
    """Trains from step ts.step to the end of the epoch, carrying state across batches.

    Args:
      ts: TrainState, positioned by reset_epoch() or a restored checkpoint.
      train_step: from make_train_step(ts).
      batches: reader.Batches of the training data.
      hooks: optional EpochHooks: each step's outputs go to hooks.after_step,
        and about ten times an epoch to hooks.report.
    Returns:
      True if the epoch ran to the end, False if hooks.after_step stopped it.
    Raises:
      Diverged: a step's cost was NaN or infinite (checked at each report and at the end).
    """
    hooks = hooks or EpochHooks()
    start_step = int(ts.step.numpy())
    interval = max(1, batches.epoch_size // 10)
    start_time = time.monotonic()
    for step, (x, y) in enumerate(batches.dataset(start=start_step), start_step + 1):
        outputs = train_step(x, y)
        # The tutorial's report: its 0-based step % (epoch_size // 10) == 10 (10 % ... so that a
        # short epoch reports too), at that step's fraction, after it; and the epoch's end.
        index = step - 1
        if index % interval == 10 % interval or step == batches.epoch_size:
            ts.check_finite()
            words = (step - start_step) * batches.batch_size * batches.num_steps
            fraction = 1.0 if step == batches.epoch_size else index / batches.epoch_size
            hooks.report(ts, fraction, words / max(time.monotonic() - start_time, 1e-9), outputs)
        if hooks.after_step(ts, outputs):
            return False
    ts.check_finite()
    return True


def evaluate(model, batches, eval_step=None):
    """Perplexity over `batches` (the training batch shape, as the tutorial's validation).

    State starts at zero and is carried across batches; the tail that does not
    fill a batch is skipped, as the tutorial did. Pass `eval_step` (from
    make_eval_step) to reuse one trace across calls. (Its two stages apart, as
    the stream runs them, measured the same at batch 20: small 20.3k-23.1k
    against 21.2k-22.2k words/s.)
    """
    eval_step = eval_step or make_eval_step(model, batches.batch_size, batches.num_steps)
    state = model.zero_state(batches.batch_size)
    total = tf.constant(0.0, tf.float64)
    for x, y in batches.dataset():
        losses, state = eval_step(x, y, state)
        total += tf.reduce_sum(tf.cast(losses, tf.float64))
    words = batches.epoch_size * batches.batch_size * batches.num_steps
    return perplexity(total.numpy() / words)


def overlaps_stream_losses(model, cache_bytes=None):
    """Whether stream_log_probs runs a chunk's losses beside the next chunk's recurrence.

    Yes when the per-step recurrent weights of all layers fit in the last-level
    cache (cache_bytes, default: this host's): the recurrence is then bound by
    latency on about one core and the softmax fills the other. PTB's test
    stream under XLA (AVX-512 host, 32 MB L3), alternating fresh processes:
    small (1.3 MB) median 5.82 -> 4.95 s (9 each, faster in every pair),
    medium (13.5 MB) 22.1 -> 22.4 s (4 each, a wash). Past the cache (large,
    72 MB) every step streams its weights from memory, and the softmax beside
    it slowed the stream: 178-195 -> 207-216 s. Measured on CPU under XLA; on
    a GPU the second thread only queues the softmax's kernels sooner.
    """
    weights = sum(math.prod(cell.recurrent_shape) for cell in model.cells) * 4  # float32
    return weights <= (host.last_level_cache_bytes() if cache_bytes is None else cache_bytes)


class StreamStages(NamedTuple):
    """The single stream's two stages, as tf.functions over any chunk length T (batch 1)."""
    hidden: Callable  # (x int32 [1, T], state) -> (outputs float32 [1, T, hidden], final state)
    losses: Callable  # (outputs, y int32 [1, T]) -> per-word losses float32 [1, T]


def make_stream_stages(model, jit_compile=False):
    """The forward pass in two stages: the recurrence, then the softmax and its losses.

    Apart, one chunk's losses (the softmax, a throughput-bound product) can run
    while the next chunk's recurrence (batch-1 products bound by latency) runs:
    see staged_losses. No dropout; one trace (under XLA, one compilation per
    distinct length).
    """
    spec = tf.TensorSpec([1, None], tf.int32)
    state_spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, model.zero_state(1))

    @tf.function(input_signature=[spec, state_spec], jit_compile=jit_compile)
    def hidden(x, state):
        return model.hidden(x, state, training=False)

    @tf.function(input_signature=[tf.TensorSpec([1, None, model.hidden_size], tf.float32), spec],
                 jit_compile=jit_compile)
    def losses(outputs, y):
        return model.word_losses(outputs, y)
    return StreamStages(hidden, losses)


def staged_losses(stages, chunks, state, overlap):
    """Yields the per-word losses (np.float32 [1, T]) of each (x, y) of chunks, in order.

    The state is carried from chunk to chunk. With overlap, the losses run on
    a second thread while the calling thread runs the next chunks' recurrence
    (overlaps_stream_losses says when that pays); the worker may lag by two
    chunks, so at most three chunks' outputs are alive. An error on either
    thread reaches the caller. The losses are the same either way.
    """
    def losses_of(outputs, y):
        return stages.losses(outputs, y).numpy()
    in_flight = collections.deque()
    with contextlib.ExitStack() as stack:
        submit = _run_now
        if overlap:
            submit = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1)).submit
        for x, y in chunks:
            outputs, state = stages.hidden(x, state)
            if len(in_flight) == 2:
                yield in_flight.popleft().result()
            in_flight.append(submit(losses_of, outputs, y))
        while in_flight:
            yield in_flight.popleft().result()


def _run_now(fn, *args):
    """fn(*args) as a finished Future: the serial twin of an executor's submit."""
    done = concurrent.futures.Future()
    done.set_result(fn(*args))
    return done


def stream_log_probs(model, ids, chunk_len=2048, jit_compile=False, overlap=None):
    """Log-probabilities of ids[1:] given everything before, as one stream (batch 1).

    The state is carried across chunks, so the result does not depend on
    chunk_len: long chunks give exactly what num_steps=1 gives, only faster
    (the softmax of a whole chunk is one matmul).

    Args:
      ids: int sequence of word ids (fewer than 2: an empty result).
      jit_compile: run the chunks under XLA (fused and basic modes; about 3x
        faster at batch 1, where TensorFlow's per-op cost dominates). Chunks
        are then padded so that one length compiles: a stream longer than
        chunk_len pads its last chunk to chunk_len (running the padding costs
        less than compiling a second length: PTB's test stream on small took
        5.6 s against 6.0 s, medians of 6 fresh processes; on medium 22.0
        against 22.4 s, of 3), a shorter one to the next power of two.
        Padding comes after the stream's last word, so it changes none of the
        words' losses, and its own are dropped.
      overlap: a chunk's losses beside the next chunk's recurrence (see
        staged_losses); None: overlaps_stream_losses(model).
    Returns:
      float64 np.ndarray [len(ids) - 1]: log p(ids[t+1] | ids[:t+1]).
    """
    ids = np.asarray(ids, dtype=np.int32)
    words = len(ids) - 1
    if words < 1:
        return np.zeros([0])
    length = chunk_len if words > chunk_len else min(chunk_len, 1 << (words - 1).bit_length())
    stages = make_stream_stages(model, jit_compile=jit_compile)
    overlap = overlaps_stream_losses(model) if overlap is None else overlap
    chunks = (_chunk(ids, start, chunk_len, length if jit_compile else None)
              for start in range(0, words, chunk_len))
    losses = staged_losses(stages, chunks, model.zero_state(1), overlap)
    return -np.concatenate([chunk[0] for chunk in losses])[:words].astype(np.float64)


def _chunk(ids, start, chunk_len, padded_len):
    """(x, y) int32 [1, n] of the words from `start`, zero-padded to padded_len if given."""
    stop = min(start + chunk_len, len(ids) - 1)
    x, y = ids[start:stop], ids[start + 1:stop + 1]
    if padded_len:
        x, y = np.pad(x, (0, padded_len - len(x))), np.pad(y, (0, padded_len - len(y)))
    return x[None], y[None]


def stream_perplexity(model, ids, chunk_len=2048, jit_compile=False, overlap=None):
    """The tutorial's exact test perplexity: batch 1, state carried over the whole stream."""
    log_probs = stream_log_probs(model, ids, chunk_len, jit_compile, overlap)
    return perplexity(-log_probs.mean())
