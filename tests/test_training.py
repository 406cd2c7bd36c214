"""Tests of training: LR schedule, the step, truncated BPTT epochs, exact stream evaluation."""

import dataclasses
import math
import threading

import numpy as np
import pytest
import tensorflow as tf

import configs
import model as model_lib
import reader
import training

CONFIG = dataclasses.replace(configs.TEST, vocab_size=12, hidden_size=8, num_layers=2,
                             num_steps=5, batch_size=4, max_grad_norm=5.0)


def _stream(length=600, seed=0):
    """A learnable id stream: mostly counts up modulo 12, with some noise."""
    rng = np.random.RandomState(seed)
    ids = np.cumsum(rng.choice([1, 1, 1, 2], size=length)) % 12
    return ids.astype(np.int32)


def _values(module):
    return [v.numpy().copy() for v in module.trainable_variables]


def test_learning_rate_follows_tutorial_schedule():
    # small: 1.0 for max_epoch=4 epochs, then halves each epoch.
    assert [training.learning_rate(configs.SMALL, i) for i in range(7)] == [
        1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    assert training.learning_rate(configs.MEDIUM, 6) == pytest.approx(0.8)
    assert training.learning_rate(configs.LARGE, 15) == pytest.approx(1.15 ** -2)


def test_train_step_changes_every_variable_and_carries_state():
    ts = training.TrainState(CONFIG, rnn_mode="basic", seed=1)
    ts.reset_epoch(0)
    before = _values(ts.model)
    batches = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps)
    x, y = batches.batch(0)
    cost, grad_norm = training.make_train_step(ts)(x, y)
    assert np.isfinite(cost.numpy()) and grad_norm.numpy() > 0
    for old, new in zip(before, _values(ts.model)):
        assert not np.array_equal(old, new)
    assert int(ts.step.numpy()) == 1 and int(ts.epoch_iters.numpy()) == CONFIG.num_steps
    assert np.abs(ts.carried[0].h.numpy()).sum() > 0


def test_an_epoch_starts_from_zero_state_with_masks_of_the_global_step():
    # Each epoch starts from zero state (the tutorial's), and its masks come from the step
    # counted over the whole run: drawn from the step within the epoch, every epoch would
    # repeat the first's masks.
    ts = training.TrainState(dataclasses.replace(CONFIG, keep_prob=0.5), rnn_mode="basic", seed=1)
    ts.reset_epoch(0)
    first = training.draw_masks(ts)
    x, y = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps).batch(0)
    training.make_train_step(ts)(x, y)
    assert all(np.abs(t.numpy()).sum() > 0 for t in tf.nest.flatten(ts.carried))
    ts.reset_epoch(1)
    assert all(not t.numpy().any() for t in tf.nest.flatten(ts.carried))
    masks = training.draw_masks(ts)
    expected = ts.model.dropout_masks(tf.constant([1, 1], tf.int64), CONFIG.batch_size,
                                      CONFIG.num_steps)  # seed 1, global step 1
    for got, want, other in zip(masks, expected, first, strict=True):
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(got, other)


def test_a_step_moves_every_variable_by_the_learning_rate_times_its_clipped_gradient():
    # The embedding's sparse update included: at lr 1.0 a missing lr changes nothing.
    config = dataclasses.replace(CONFIG, max_grad_norm=0.05)
    ts = training.TrainState(config, rnn_mode="basic", seed=1)
    ts.reset_epoch(0)
    ts.lr.assign(0.3)
    x, y = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps).batch(0)
    state = ts.model.zero_state(CONFIG.batch_size)
    with tf.GradientTape() as tape:
        cost = model_lib.sequence_cost(ts.model(x, state, training=True)[0], y)
    variables = ts.model.trainable_variables
    grads, norm = tf.clip_by_global_norm(tape.gradient(cost, variables), 0.05)
    assert norm.numpy() > 0.05  # the clipping acts
    before = _values(ts.model)
    training.make_train_step(ts)(x, y)
    for var, old, grad in zip(variables, before, grads):
        np.testing.assert_allclose(var.numpy(), old - 0.3 * tf.convert_to_tensor(grad).numpy(),
                                   rtol=1e-5, atol=1e-7, err_msg=var.name)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_batch_gradients_are_those_of_the_tutorial_cost_of_the_logits(jit_compile):
    # The step adds the softmax bias inside the loss (model.biased_word_losses); its cost
    # and gradients are those of sequence_cost(model(x)), the bias spread as in training.
    ts = training.TrainState(CONFIG, rnn_mode="basic", seed=1)
    ts.model.softmax_b.assign(tf.random.stateless_normal([CONFIG.vocab_size], [4, 2], stddev=3.0))
    x, y = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps).batch(0)
    state = ts.model.zero_state(CONFIG.batch_size)
    variables = ts.model.trainable_variables

    @tf.function(jit_compile=jit_compile)
    def both():
        cost, grads, _ = training.batch_gradients(ts, x, y, state, None, CONFIG.batch_size)
        with tf.GradientTape() as tape:
            logits, _ = ts.model(x, state, training=True)
            tutorial = model_lib.sequence_cost(logits, y)
        return (cost, tutorial, [tf.convert_to_tensor(g) for g in grads],
                [tf.convert_to_tensor(g) for g in tape.gradient(tutorial, variables)])

    cost, tutorial, grads, expected = both()
    np.testing.assert_allclose(cost, tutorial, rtol=1e-6)
    for var, got, want in zip(variables, grads, expected):
        assert np.abs(want.numpy()).max() > 0, var.name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6, err_msg=var.name)


def test_train_step_clips_by_global_norm():
    config = dataclasses.replace(CONFIG, max_grad_norm=1e-3, learning_rate=1.0)
    ts = training.TrainState(config, rnn_mode="basic", seed=1)
    ts.reset_epoch(0)
    before = _values(ts.model)
    x, y = reader.ptb_producer(_stream(), 4, 5).batch(0)
    _, grad_norm = training.make_train_step(ts)(x, y)
    assert grad_norm.numpy() > 1e-3  # the norm before clipping
    moved = math.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, _values(ts.model))))
    assert moved == pytest.approx(1e-3, rel=1e-3)  # lr 1.0 times the clipped norm


@pytest.mark.parametrize("jit_compile", [False, True])
def test_clip_by_global_norm_equals_tensorflows(jit_compile):
    rng = np.random.RandomState(0)
    grads = [tf.constant(rng.randn(*shape).astype(np.float32))
             for shape in [(200, 96), (97,), (2, 1031), (3,)]]  # the last two: no row width
    grads.append(tf.IndexedSlices(tf.constant(rng.randn(6, 5).astype(np.float32)),
                                  tf.constant([0, 2, 2, 1, 0, 3]), tf.constant([4, 5])))

    @tf.function(jit_compile=jit_compile)
    def ours(scale):
        return training.clip_by_global_norm([g * scale for g in grads[:-1]] + grads[-1:], 3.0,
                                            as_matvec=jit_compile)
    for scale in [1.0, 1e-3, np.inf]:
        want, want_norm = tf.clip_by_global_norm([g * scale for g in grads[:-1]] + grads[-1:], 3.0)
        got, got_norm = ours(tf.constant(scale, tf.float32))
        np.testing.assert_allclose(got_norm.numpy(), want_norm.numpy(), rtol=1e-5)
        for g, w in zip(got[:-1], want[:-1]):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-5, atol=1e-7)
        assert isinstance(got[-1], tf.IndexedSlices)
        np.testing.assert_allclose(got[-1].values.numpy(), want[-1].values.numpy(), rtol=1e-5)
    assert np.isnan(got[0].numpy()).all()  # an infinite norm scales every gradient to NaN


def test_run_epoch_loss_falls_on_learnable_stream():
    config = dataclasses.replace(CONFIG, hidden_size=32, max_epoch=5)  # LR stays 1.0
    ts = training.TrainState(config, rnn_mode="block")
    batches = reader.ptb_producer(_stream(2000), CONFIG.batch_size, CONFIG.num_steps)
    step = training.make_train_step(ts)
    perplexities = []
    for epoch in range(3):
        ts.reset_epoch(epoch)
        assert training.run_epoch(ts, step, batches)
        perplexities.append(ts.epoch_perplexity())
    assert perplexities[-1] < 0.6 * perplexities[0], perplexities
    assert training.evaluate(ts.model, batches) < perplexities[0]


def test_evaluate_is_the_perplexity_of_the_batches_with_the_state_carried():
    config = dataclasses.replace(CONFIG, keep_prob=0.5, init_scale=1.0)  # a state that matters
    ts = training.TrainState(config, rnn_mode="basic", seed=2)
    batches = reader.ptb_producer(_stream(300), CONFIG.batch_size, CONFIG.num_steps)
    model, state, carried, fresh = ts.model, ts.model.zero_state(CONFIG.batch_size), 0.0, 0.0
    zero = state
    for i in range(batches.epoch_size):
        x, y = batches.batch(i)
        logits, state = model(x, state)  # no dropout: evaluation
        carried += model_lib.sequence_cost(logits, y).numpy() * CONFIG.batch_size
        fresh += model_lib.sequence_cost(model(x, zero)[0], y).numpy() * CONFIG.batch_size
    words = batches.epoch_size * CONFIG.batch_size * CONFIG.num_steps
    got = training.evaluate(model, batches)
    assert got == pytest.approx(math.exp(carried / words), rel=1e-5)
    assert got != pytest.approx(math.exp(fresh / words), rel=1e-3)  # 15.00 against 15.04


class _StopAt(training.EpochHooks):
    """Ends the epoch after step `stop`; records what the hooks were handed."""

    def __init__(self, stop=None):
        self.stop, self.costs, self.reports = stop, [], []

    def after_step(self, ts, outputs):
        self.costs.append(float(outputs[0]))
        return int(ts.step.numpy()) == self.stop

    def report(self, ts, fraction, words_per_second, outputs):
        self.reports.append((fraction, float(outputs[1])))


def test_run_epoch_hands_each_step_outputs_to_its_hooks():
    batches = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps)
    ts = training.TrainState(CONFIG, rnn_mode="basic")
    ts.reset_epoch(0)
    hooks = _StopAt()
    assert training.run_epoch(ts, training.make_train_step(ts), batches, hooks)
    assert len(hooks.costs) == batches.epoch_size
    # The epoch's perplexity is made of the very costs the hooks saw.
    mean = sum(hooks.costs) / (batches.epoch_size * CONFIG.num_steps)
    assert ts.epoch_perplexity() == pytest.approx(math.exp(mean), rel=1e-5)
    assert hooks.reports[-1][0] == 1.0 and len(hooks.reports) >= 2
    assert all(norm > 0 for _, norm in hooks.reports)


def test_run_epoch_reports_where_the_tutorial_prints():
    # The tutorial: for step in range(epoch_size) (0-based), after the step, print when
    # step % (epoch_size // 10) == 10, at step / epoch_size, over the steps so far. Here 600
    # ids at 4 x 5 are 29 steps: interval 2, so 10 % 2 = 0 (a short epoch reports too).
    batches = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps)
    ts = training.TrainState(CONFIG, rnn_mode="basic")
    ts.reset_epoch(0)

    class Reports(training.EpochHooks):
        seen = []

        def report(self, ts, fraction, words_per_second, outputs):
            self.seen.append((fraction, int(ts.epoch_iters.numpy()) // CONFIG.num_steps))
    hooks = Reports()
    training.run_epoch(ts, training.make_train_step(ts), batches, hooks)
    size = batches.epoch_size
    assert size == 29
    # Steps 0, 2, ..., 26 as the tutorial's; its 28 is the last, reported as the end (1.000).
    expected = [(index / size, index + 1) for index in range(0, size - 1, 2)] + [(1.0, size)]
    assert hooks.seen == expected


def test_run_epoch_resumed_mid_epoch_equals_uninterrupted(tmp_path):
    config = dataclasses.replace(CONFIG, keep_prob=0.7)
    batches = reader.ptb_producer(_stream(), config.batch_size, config.num_steps)
    whole = training.TrainState(config, rnn_mode="basic", seed=5)
    whole.reset_epoch(0)
    training.run_epoch(whole, training.make_train_step(whole), batches)

    first = training.TrainState(config, rnn_mode="basic", seed=5)
    first.reset_epoch(0)
    training.run_epoch(first, training.make_train_step(first), batches, _StopAt(7))
    snapshot = tf.train.Checkpoint(state=first)
    path = snapshot.write(str(tmp_path / "mid"))
    resumed = training.TrainState(config, rnn_mode="basic", seed=5)
    tf.train.Checkpoint(state=resumed).read(path).assert_existing_objects_matched()
    assert int(resumed.step.numpy()) == 7
    training.run_epoch(resumed, training.make_train_step(resumed), batches)
    for a, b in zip(_values(whole.model), _values(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert resumed.epoch_perplexity() == pytest.approx(whole.epoch_perplexity(), rel=1e-6)


def test_train_step_non_finite_cost_leaves_variables_and_raises():
    ts = training.TrainState(CONFIG, rnn_mode="basic")
    ts.reset_epoch(0)
    ts.model.softmax_b.assign(tf.fill(ts.model.softmax_b.shape, np.nan))
    before = _values(ts.model)
    batches = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps)
    with pytest.raises(training.Diverged, match=r"NaN or infinite at epoch 1 \(global step 0\); "
                                                r"stopped without saving: lower init_scale: the "
                                                r"first step's cost comes from the starting"):
        training.run_epoch(ts, training.make_train_step(ts), batches)
    for a, b in zip(before, _values(ts.model)):
        np.testing.assert_array_equal(a, b)


def test_train_step_runs_under_one_device_strategy():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        ts = training.TrainState(CONFIG, rnn_mode="basic")
        step = training.make_train_step(ts)
    ts.reset_epoch(0)
    x, y = reader.ptb_producer(_stream(), 4, 5).batch(0)
    cost, _ = strategy.run(step, args=(tf.constant(x), tf.constant(y)))
    assert np.isfinite(cost.numpy()) and int(ts.global_step.numpy()) == 1


def test_train_step_traces_once():
    ts = training.TrainState(CONFIG, rnn_mode="fused")
    ts.reset_epoch(0)
    step = training.make_train_step(ts, jit_compile=True)
    batches = reader.ptb_producer(_stream(), CONFIG.batch_size, CONFIG.num_steps)
    training.run_epoch(ts, step, batches)
    assert step.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("rnn_mode", ["basic", "block", "fused"])
def test_stream_perplexity_long_chunks_equal_one_step_batches(rnn_mode):
    ts = training.TrainState(CONFIG, rnn_mode=rnn_mode, seed=2)
    ids = _stream(300, seed=4)
    # The tutorial's test evaluation: batch 1, num_steps 1, state carried.
    one_step = reader.ptb_producer(ids, batch_size=1, num_steps=1)
    expected = training.evaluate(ts.model, one_step)
    for chunk_len in (1, 7, 299, 4096):
        assert training.stream_perplexity(ts.model, ids, chunk_len) == pytest.approx(
            expected, rel=1e-5), chunk_len


@pytest.mark.parametrize("rnn_mode", ["basic", "fused"])
def test_stream_log_probs_under_xla_equal_plain_kernels(rnn_mode, monkeypatch):
    # Under XLA the last chunk is padded (43 -> 128 of a longer stream, 299 -> 512 of one
    # shorter than a chunk), so one length compiles: no word's loss changes.
    ts = training.TrainState(CONFIG, rnn_mode=rnn_mode, seed=2)
    ids = _stream(300, seed=4)
    expected = training.stream_log_probs(ts.model, ids, chunk_len=7)
    make_stream_stages, lengths = training.make_stream_stages, []

    def recording_stream_stages(*args, **kwargs):
        stages = make_stream_stages(*args, **kwargs)
        return stages._replace(hidden=lambda x, state: (lengths.append(x.shape[1]),
                                                        stages.hidden(x, state))[1])
    monkeypatch.setattr(training, "make_stream_stages", recording_stream_stages)
    for chunk_len, chunk_lengths in ((128, [128] * 3), (4096, [512])):
        lengths.clear()
        got = training.stream_log_probs(ts.model, ids, chunk_len, jit_compile=True)
        assert got.shape == (299,) and lengths == chunk_lengths
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=str(chunk_len))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_stream_log_probs_overlapped_equal_serial(jit_compile):
    # The losses on a second thread, two chunks in flight: same words, same order, same values.
    ts = training.TrainState(CONFIG, seed=2)
    ids = _stream(300, seed=4)
    serial = training.stream_log_probs(ts.model, ids, 16, jit_compile, overlap=False)
    overlapped = training.stream_log_probs(ts.model, ids, 16, jit_compile, overlap=True)
    assert serial.shape == (299,)
    np.testing.assert_array_equal(overlapped, serial)


def _fake_stages(fail_at=None):
    """Stages over plain numbers: hidden adds x to the state; losses record their thread."""
    threads = []

    def hidden(x, state):
        return x + state, state + 1

    def losses(outputs, y):
        threads.append(threading.get_ident())
        if y == fail_at:
            raise ValueError(f"chunk {y}")
        return tf.constant([outputs * 10 + y])
    return training.StreamStages(hidden, losses), threads


@pytest.mark.parametrize("overlap", [False, True])
def test_staged_losses_keep_order_and_state_and_run_the_losses_aside_when_overlapping(overlap):
    stages, threads = _fake_stages()
    chunks = [(x, x) for x in range(5)]
    got = [int(v[0]) for v in training.staged_losses(stages, chunks, 100, overlap)]
    assert got == [(x + 100 + x) * 10 + x for x in range(5)]  # state 100, 101, ...
    main = threading.get_ident()
    assert all((t != main) == overlap for t in threads) and len(threads) == 5


@pytest.mark.parametrize("overlap", [False, True])
def test_staged_losses_raise_a_failed_chunks_error(overlap):
    stages, _ = _fake_stages(fail_at=2)
    with pytest.raises(ValueError, match="chunk 2"):
        list(training.staged_losses(stages, [(x, x) for x in range(5)], 0, overlap))


def test_stream_losses_overlap_while_the_recurrent_weights_fit_in_the_cache():
    model = training.TrainState(CONFIG, seed=2).model
    weights = 2 * 8 * 32 * 4  # layers x [hidden, 4 hidden] float32
    assert training.overlaps_stream_losses(model, cache_bytes=weights)
    assert not training.overlaps_stream_losses(model, cache_bytes=weights - 1)


@pytest.mark.parametrize("keep_prob", [1.0, 0.5])
def test_fused_xla_train_step_equals_basic_reference_step(keep_prob):
    # With dropout too: the masks are drawn outside XLA, so both steps use the same ones.
    config = dataclasses.replace(CONFIG, keep_prob=keep_prob)
    batches = reader.ptb_producer(_stream(), config.batch_size, config.num_steps)
    results = []
    for rnn_mode, jit in (("basic", False), ("fused", True)):
        ts = training.TrainState(config, rnn_mode=rnn_mode, seed=9)
        ts.reset_epoch(0)
        step = training.make_train_step(ts, jit_compile=jit)
        for i in range(3):  # state carried: later steps start from the previous final state
            step(*batches.batch(i))
        results.append(_values(ts.model) + [ts.epoch_cost.numpy()])
    for reference, fused in zip(*results):
        np.testing.assert_allclose(fused, reference, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("options", [
    dict(tie_embeddings=True, variational_dropout=True, keep_prob=0.6, recurrent_keep_prob=0.7,
         embedding_dropout=0.8, weight_drop=0.5),
    dict(cell="gru", tie_embeddings=True, variational_dropout=True, keep_prob=0.6,
         recurrent_keep_prob=0.7, embedding_dropout=0.8, weight_drop=0.5),
])
def test_train_step_with_the_options_beyond_the_tutorial(options):
    # The step draws the model's masks from (seed, global step) as ever: every option rides
    # on that contract. An LSTM's fused step under XLA equals the basic one.
    config = dataclasses.replace(CONFIG, **options)
    batches = reader.ptb_producer(_stream(), config.batch_size, config.num_steps)
    modes = (("basic", False), ("fused", True)) if config.cell == "lstm" else (("auto", True),)
    results = []
    for rnn_mode, jit in modes:
        ts = training.TrainState(config, rnn_mode=rnn_mode, seed=9)
        ts.reset_epoch(0)
        before = _values(ts.model)
        step = training.make_train_step(ts, jit_compile=jit)
        for i in range(3):
            cost, _ = step(*batches.batch(i))
            assert np.isfinite(cost.numpy())
        results.append(_values(ts.model) + [ts.epoch_cost.numpy()])
        for old, new in zip(before, _values(ts.model)):
            assert not np.array_equal(old, new)
    for reference, other in zip(results[0], results[-1]):
        np.testing.assert_allclose(other, reference, rtol=2e-5, atol=2e-6)
