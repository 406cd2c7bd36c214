"""Tests of PTBModel: initialisation, state carrying, modes, dropout, the cost, the regularised
models' options."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import configs
import model as model_lib
from rnn import kernels

VOCAB, HIDDEN = 31, 8


def _model(rnn_mode="basic", keep_prob=1.0, seed=3, num_layers=2):
    return model_lib.PTBModel(VOCAB, HIDDEN, num_layers, init_scale=0.3, keep_prob=keep_prob,
                              rnn_mode=rnn_mode, seed=seed)


def _ids(batch, steps, seed=0):
    return tf.constant(np.random.RandomState(seed).randint(0, VOCAB, [batch, steps]), tf.int32)


def test_model_init_uniform_in_scale_and_lstm_bias_zero():
    model = _model()
    for var in model.trainable_variables:
        values = var.numpy()
        if var.name.startswith("ptb_model/lstm") and "bias" in var.name:
            np.testing.assert_array_equal(values, 0.0)  # as the tutorial's LSTM cells
        else:
            assert np.all(np.abs(values) <= 0.3) and values.std() > 0.1, var.name
    assert all(cell.forget_bias == 0.0 for cell in model.cells)


def test_model_init_is_seeded():
    a, b, c = _model(seed=1), _model(seed=1), _model(seed=2)
    for va, vb, vc in zip(a.trainable_variables, b.trainable_variables, c.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
        if "bias" not in va.name:
            assert not np.array_equal(va.numpy(), vc.numpy())


def test_model_shapes_and_parameter_layout():
    model = _model()
    x = _ids(3, 5)
    logits, state = model(x, model.zero_state(3))
    assert logits.shape == [3, 5, VOCAB]
    assert len(state) == 2 and state[1].h.shape == [3, HIDDEN]
    shapes = sorted(tuple(v.shape) for v in model.trainable_variables)
    assert shapes == sorted([(VOCAB, HIDDEN), (2 * HIDDEN, 4 * HIDDEN), (4 * HIDDEN,),
                             (2 * HIDDEN, 4 * HIDDEN), (4 * HIDDEN,), (HIDDEN, VOCAB), (VOCAB,)])


@pytest.mark.parametrize("rnn_mode", ["basic", "block", "fused"])
def test_model_two_halves_with_state_carried_equal_whole(rnn_mode):
    model = _model(rnn_mode)
    x = _ids(4, 10)
    whole, whole_state = model(x, model.zero_state(4))
    first, state = model(x[:, :6], model.zero_state(4))
    second, halves_state = model(x[:, 6:], state)
    np.testing.assert_allclose(tf.concat([first, second], 1), whole, atol=1e-5)
    for a, b in zip(tf.nest.flatten(halves_state), tf.nest.flatten(whole_state)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("rnn_mode", ["block", "fused"])
def test_model_modes_agree_with_basic_on_shared_variables(rnn_mode):
    basic = _model("basic", seed=3)
    other = _model(rnn_mode, seed=4)
    for a, b in zip(basic.trainable_variables, other.trainable_variables):
        b.assign(a)
    x = _ids(2, 7)
    np.testing.assert_allclose(other(x, other.zero_state(2))[0], basic(x, basic.zero_state(2))[0],
                               atol=1e-5)


def test_model_dropout_only_when_training_and_repeatable_by_seed():
    model = _model(keep_prob=0.5)
    plain = _model(keep_prob=1.0)
    x, zero = _ids(2, 6), model.zero_state(2)
    np.testing.assert_allclose(model(x, zero)[0], plain(x, zero)[0], atol=1e-6)
    seed = tf.constant([7, 1], tf.int64)
    a = model(x, zero, training=True, seed=seed)[0]
    b = model(x, zero, training=True, seed=seed)[0]
    c = model(x, zero, training=True, seed=tf.constant([7, 2], tf.int64))[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, model(x, zero)[0])


def test_dropout_masks_are_stateless_dropouts_masks():
    # The masks drawn ahead of the step are exactly tf.nn.experimental.stateless_dropout's.
    model = _model(keep_prob=0.6)
    seed = tf.constant([5, 11], tf.int64)
    masks = model.dropout_masks(seed, batch_size=3, num_steps=4)
    assert len(masks) == model.num_layers + 1
    x = tf.random.stateless_normal([4, 3, HIDDEN], seed=[1, 2])
    for site, keep in enumerate(masks):
        site_seed = tf.random.experimental.stateless_fold_in(seed, site, alg="philox")
        expected = tf.nn.experimental.stateless_dropout(x, rate=0.4, seed=site_seed,
                                                        rng_alg="philox")
        np.testing.assert_array_equal(model._dropout(x, keep), expected)
    assert not np.array_equal(masks[0], masks[1])


def test_model_rejects_unknown_rnn_mode():
    with pytest.raises(ValueError, match="unknown rnn_mode 'fast'"):
        _model("fast")


def test_sequence_cost_sums_over_time_and_averages_over_batch():
    rng = np.random.RandomState(1)
    logits = rng.randn(3, 4, 5).astype(np.float32)
    targets = rng.randint(0, 5, [3, 4]).astype(np.int32)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_softmax, targets[..., None], -1)[..., 0]  # [batch, steps]
    expected = nll.sum(axis=1).mean()
    np.testing.assert_allclose(model_lib.sequence_cost(logits, targets), expected, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_word_losses_equal_stock_op_in_value_and_gradient(jit_compile):
    rng = np.random.RandomState(2)
    # Large logits too: the shift by the row maximum keeps exp finite.
    scales = np.array([1.0, 30.0, 300.0], np.float32)[:, None, None]
    logits = tf.constant(rng.randn(3, 4, 50).astype(np.float32) * scales)
    targets = tf.constant(rng.randint(0, 50, [3, 4]).astype(np.int32))
    weights = tf.constant(rng.rand(3, 4).astype(np.float32))

    def value_and_grad(fn):
        @tf.function(jit_compile=jit_compile)
        def run(logits):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                losses = fn(logits)
                total = tf.reduce_sum(losses * weights)
            return losses, tape.gradient(total, logits)
        return run(logits)

    ours = value_and_grad(lambda l: model_lib.word_losses(l, targets))
    stock = value_and_grad(lambda l: tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets, logits=l))
    np.testing.assert_allclose(ours[0], stock[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours[1], stock[1], rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(ours[0])) and np.all(np.isfinite(ours[1]))


def _losses_and_grads(fn, logits, bias, weights, jit_compile):
    """fn() -> losses, with d(sum of losses * weights)/d(logits, bias)."""
    @tf.function(jit_compile=jit_compile)
    def run():
        with tf.GradientTape() as tape:
            tape.watch([logits, bias])
            losses = fn()
            total = tf.reduce_sum(losses * weights)
        return (losses,) + tuple(tape.gradient(total, [logits, bias]))
    return run()


def _assert_biased_losses_match(logits, bias, targets, jit_compile, rtol=1e-5, atol=1e-6):
    """biased_word_losses against word_losses of logits + bias, in values and gradients."""
    weights = tf.constant(np.random.RandomState(0).rand(*targets.shape).astype(np.float32))
    ours = _losses_and_grads(lambda: model_lib.biased_word_losses(logits, bias, targets),
                             logits, bias, weights, jit_compile)
    plain = _losses_and_grads(lambda: model_lib.word_losses(logits + bias, targets),
                              logits, bias, weights, jit_compile)
    stock = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits + bias)
    np.testing.assert_allclose(ours[0], stock, rtol=rtol, atol=atol)
    for got, expected in zip(ours, plain):
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("shape", [[2, 4], [6]], ids=["rank2", "rank1"])
def test_biased_word_losses_equal_word_losses_of_the_biased_logits(jit_compile, shape):
    rng = np.random.RandomState(3)
    scales = rng.choice([1.0, 30.0], size=shape + [1]).astype(np.float32)
    logits = tf.constant(rng.randn(*shape, 50).astype(np.float32) * scales)
    bias = tf.constant(rng.randn(50).astype(np.float32) * 5)
    targets = tf.constant(rng.randint(0, 50, shape).astype(np.int32))
    _assert_biased_losses_match(logits, bias, targets, jit_compile)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_biased_word_losses_keep_small_terms_at_the_largest_bounded_spread(jit_compile):
    # The bias spreads exactly _MAX_BOUNDED_SPREAD (the bound is taken), the bound lies
    # that far above each row's max, and 9,998 terms 9 below the max carry half the
    # sum: were they lost to underflow, the losses would be off by log 2.
    vocab, spread = 10_000, model_lib._MAX_BOUNDED_SPREAD
    logits = np.full([3, vocab], -9.0, np.float32)
    logits[:, 0], logits[:, 1] = -spread - 100.0, 0.0
    bias = np.zeros([vocab], np.float32)
    bias[0] = spread
    _assert_biased_losses_match(tf.constant(logits), tf.constant(bias),
                                tf.constant([1, 2, 9_999], tf.int32), jit_compile)


def _far_apart_logits_and_bias():
    """Logits and bias whose maxima sit in different columns, 100 apart: the bound of
    max(logits + bias) is 100 above the true max, where exp underflows."""
    logits = np.zeros([3, 50], np.float32)
    logits[:, 0] = -100.0
    bias = np.zeros([50], np.float32)
    bias[0] = 100.0
    return tf.constant(logits), tf.constant(bias), tf.constant([0, 1, 7], tf.int32)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_biased_word_losses_are_exact_where_the_bound_would_underflow(jit_compile, monkeypatch):
    logits, bias, targets = _far_apart_logits_and_bias()
    _assert_biased_losses_match(logits, bias, targets, jit_compile)
    # Shifted by the bound the losses would be inf: the case does exercise the guard.
    monkeypatch.setattr(model_lib, "_MAX_BOUNDED_SPREAD", np.inf)
    unguarded = tf.function(model_lib.biased_word_losses, jit_compile=jit_compile)
    stock = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits + bias)
    assert not np.allclose(unguarded(logits, bias, targets), stock)


@pytest.mark.parametrize("tie", [False, True])
def test_model_word_losses_are_the_losses_of_its_logits(tie):
    model = model_lib.PTBModel(vocab_size=VOCAB, hidden_size=6, num_layers=2, init_scale=0.5,
                               rnn_mode="basic", tie_embeddings=tie)
    model.softmax_b.assign(tf.random.stateless_normal([VOCAB], seed=[1, 2], stddev=3.0))
    x, y = _ids(2, 5), _ids(2, 5, seed=1)
    outputs, _ = model.hidden(x, model.zero_state(2))
    np.testing.assert_allclose(model.word_losses(outputs, y),
                               model_lib.word_losses(model.project(outputs), y),
                               rtol=1e-5, atol=1e-5)


def test_mask_rows_are_the_rows_of_the_whole_batch_masks():
    model = model_lib.PTBModel(vocab_size=11, hidden_size=6, num_layers=2, init_scale=0.1,
                               keep_prob=0.5, rnn_mode="basic")
    seed = tf.constant([3, 9], tf.int64)
    whole = model.dropout_masks(seed, batch_size=4, num_steps=5)
    halves = [model_lib.PTBModel.mask_rows(whole, 0, 2), model_lib.PTBModel.mask_rows(whole, 2, 4)]
    for site, mask in enumerate(whole):
        assert mask.shape == (5, 4, 6)
        np.testing.assert_array_equal(
            np.concatenate([halves[0][site], halves[1][site]], axis=1), mask.numpy())


# Beyond the tutorial: tied embeddings, variational dropout, embedding dropout,
# weight drop, GRU and RNN cells.

OPTIONS = {
    "tied": dict(tie_embeddings=True),
    "variational": dict(variational_dropout=True, keep_prob=0.6),
    "recurrent": dict(variational_dropout=True, recurrent_keep_prob=0.7),
    "embedding": dict(embedding_dropout=0.6),
    "weight_drop": dict(weight_drop=0.5),
    "all": dict(tie_embeddings=True, variational_dropout=True, keep_prob=0.6,
                recurrent_keep_prob=0.7, embedding_dropout=0.8, weight_drop=0.5),
}


def _options_model(rnn_mode="basic", seed=3, **options):
    options.setdefault("keep_prob", 1.0)
    return model_lib.PTBModel(VOCAB, HIDDEN, 2, init_scale=0.3, rnn_mode=rnn_mode, seed=seed,
                              **options)


def _old_tutorial_masks(seed, batch_size, num_steps, keep_prob, num_layers):
    """dropout_masks as the tutorial's model drew them before the regularised models' options."""
    masks = []
    for site in range(num_layers + 1):
        site_seed = tf.random.experimental.stateless_fold_in(seed, site, alg="philox")
        uniform = tf.random.stateless_uniform([num_steps, batch_size, HIDDEN], seed=site_seed,
                                              alg="philox")
        masks.append(uniform >= 1.0 - keep_prob)
    return tuple(masks)


@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_model_tutorial_configs_keep_their_variables_and_masks(name):
    config = dataclasses.replace(configs.get_config(name), vocab_size=VOCAB, hidden_size=HIDDEN)
    model = model_lib.PTBModel.from_config(config, rnn_mode="basic", seed=5)
    # Variable k (in creation order) is stateless_uniform with seed (seed, k); biases zero.
    expected = {"ptb_model/embedding:0": (0, [VOCAB, HIDDEN]),
                "ptb_model/softmax_w:0": (3, [HIDDEN, VOCAB]),
                "ptb_model/softmax_b:0": (4, [VOCAB]),
                "ptb_model/lstm_0/kernel:0": (1, [2 * HIDDEN, 4 * HIDDEN]),
                "ptb_model/lstm_1/kernel:0": (2, [2 * HIDDEN, 4 * HIDDEN])}
    names = sorted(v.name for v in model.trainable_variables)
    assert names == sorted([*expected, "ptb_model/lstm_0/bias:0", "ptb_model/lstm_1/bias:0"])
    for var in model.trainable_variables:
        if var.name in expected:
            k, shape = expected[var.name]
            want = tf.random.stateless_uniform(shape, seed=[5, k], minval=-config.init_scale,
                                               maxval=config.init_scale)
            np.testing.assert_array_equal(var.numpy(), want.numpy())
    seed = tf.constant([4, 2], tf.int64)
    if model.uses_dropout:
        masks = model.dropout_masks(seed, 3, 4)
        assert type(masks) is tuple  # the tutorial's plain tuple, not KeepMasks
        for got, want in zip(masks, _old_tutorial_masks(seed, 3, 4, config.keep_prob, 2),
                             strict=True):
            np.testing.assert_array_equal(got, want)
    else:
        assert name == "small" and config.keep_prob == 1.0


@pytest.mark.parametrize("name", list(OPTIONS))
def test_model_options_draw_masks_and_change_only_training(name):
    model = _options_model(**OPTIONS[name])
    x, zero, seed = _ids(3, 6), model.zero_state(3), tf.constant([7, 1], tf.int64)
    assert model.uses_dropout == (name != "tied")
    if name == "tied":
        return
    masks = model.dropout_masks(seed, 3, 6)
    assert isinstance(masks, model_lib.KeepMasks)
    a = model(x, zero, training=True, keep_masks=masks)[0]
    np.testing.assert_array_equal(a, model(x, zero, training=True, seed=seed)[0])
    assert not np.allclose(a, model(x, zero)[0])
    plain = _options_model(seed=3, tie_embeddings=model.tie_embeddings)
    np.testing.assert_allclose(model(x, zero)[0], plain(x, zero)[0], atol=1e-6)


def test_variational_dropout_without_dropout_draws_no_masks():
    assert not _options_model(variational_dropout=True, tie_embeddings=True).uses_dropout


def test_keep_masks_shapes_and_keep_fractions():
    model = _options_model(**OPTIONS["all"])
    masks = model.dropout_masks(tf.constant([1, 2], tf.int64), batch_size=400, num_steps=5)
    assert [m.shape for m in masks.sites] == [(400, HIDDEN)] * 3  # held over the steps
    assert [m.shape for m in masks.recurrent] == [(400, HIDDEN)] * 2
    assert [m.shape for m in masks.weights] == [(HIDDEN, 4 * HIDDEN)] * 2
    assert [m.shape for m in masks.embedding] == [(VOCAB,)]
    for group, keep in ((masks.sites, 0.6), (masks.recurrent, 0.7), (masks.weights, 0.5)):
        for mask in group:
            assert abs(np.mean(mask) - keep) < 0.06
    streams = [m.numpy().ravel()[:HIDDEN] for m in masks.sites + masks.recurrent]
    assert len({s.tobytes() for s in streams}) == len(streams)  # every site its own draw
    # Another batch's seed (the global step) draws new masks of every kind, not only sites.
    other = model.dropout_masks(tf.constant([1, 3], tf.int64), batch_size=400, num_steps=5)
    for field in model_lib.KeepMasks._fields:
        for mask, other_mask in zip(getattr(masks, field), getattr(other, field), strict=True):
            assert not np.array_equal(mask, other_mask), field


def test_variational_dropout_holds_one_mask_per_row_over_time_scaled_by_one_over_keep():
    model = _options_model(variational_dropout=True, keep_prob=0.6)
    keep = model.dropout_masks(tf.constant([3, 3], tf.int64), 2, 5).sites[1].numpy()  # [B, H]
    x = np.random.RandomState(0).randn(5, 2, HIDDEN).astype(np.float32)  # [T, B, H]
    want = x * keep[None] / 0.6  # NumPy: the same mask at every step
    np.testing.assert_allclose(model._dropout(tf.constant(x), tf.constant(keep)), want, rtol=1e-6)


def test_embedding_dropout_drops_whole_rows_per_word_type_scaled_by_one_over_keep():
    model = _options_model(embedding_dropout=0.5)
    masks = model.dropout_masks(tf.constant([8, 1], tf.int64), 4, 9)
    ids = _ids(4, 9, seed=2)
    got = model._embed(ids, masks).numpy()  # [T, B, H]
    keep = masks.embedding[0].numpy()       # [vocab]
    embedding = model.embedding.numpy()
    want = (embedding * keep[:, None] / 0.5)[ids.numpy().T]  # NumPy: rows of a dropped matrix
    np.testing.assert_allclose(got, want, rtol=1e-6)
    dropped = [w for w in set(ids.numpy().ravel()) if not keep[w]]
    assert dropped  # some word type is dropped everywhere it occurs in the batch
    assert np.all(got[(ids.numpy().T == dropped[0])] == 0)


def test_weight_drop_is_the_model_with_masked_recurrent_weights():
    model = _options_model(weight_drop=0.5)
    masks = model.dropout_masks(tf.constant([2, 9], tf.int64), 3, 6)
    x, zero = _ids(3, 6), model.zero_state(3)
    got = model(x, zero, training=True, keep_masks=masks)[0]
    # Reference: a plain model whose W_h rows are multiplied by mask / keep.
    plain = _options_model(seed=3)
    for cell, mask in zip(plain.cells, masks.weights):
        cell.kernel[HIDDEN:].assign(cell.kernel[HIDDEN:] * tf.cast(mask, tf.float32) / 0.5)
    np.testing.assert_allclose(got, plain(x, zero)[0], atol=1e-5)


def test_tied_model_has_no_softmax_w_and_its_gradient_is_both_uses():
    tied = _options_model(tie_embeddings=True)
    untied = _options_model(seed=3)
    assert "softmax_w" not in " ".join(v.name for v in tied.trainable_variables)
    assert len(tied.trainable_variables) == len(untied.trainable_variables) - 1
    tied.softmax_b.assign(untied.softmax_b)
    untied.softmax_w.assign(tf.transpose(untied.embedding))
    x, y = _ids(2, 5), _ids(2, 5, seed=1)

    def loss_and_grads(model, variables):
        with tf.GradientTape() as tape:
            cost = model_lib.sequence_cost(model(x, model.zero_state(2))[0], y)
        return cost, [tf.convert_to_tensor(g) for g in tape.gradient(cost, variables)]
    tied_cost, (d_embedding,) = loss_and_grads(tied, [tied.embedding])
    untied_cost, (d_lookup, d_softmax_w) = loss_and_grads(
        untied, [untied.embedding, untied.softmax_w])
    np.testing.assert_allclose(tied_cost, untied_cost, rtol=1e-6)
    np.testing.assert_allclose(d_embedding, d_lookup + tf.transpose(d_softmax_w), atol=1e-6)
    # NumPy: the logits are h @ E^T + b.
    outputs, _ = tied.hidden(x, tied.zero_state(2))
    np.testing.assert_allclose(tied.project(outputs),
                               outputs.numpy() @ tied.embedding.numpy().T + tied.softmax_b.numpy(),
                               rtol=1e-5, atol=1e-5)


def _cost_and_grads(model, x, y, masks):
    with tf.GradientTape() as tape:
        logits, final = model(x, model.zero_state(x.shape[0]), training=True, keep_masks=masks)
        cost = model_lib.sequence_cost(logits, y) + tf.reduce_sum(final[-1].h)
    grads = tape.gradient(cost, model.trainable_variables)
    return cost, [tf.convert_to_tensor(g) for g in grads]


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_model_fused_equals_basic_in_values_and_gradients_with_each_option(name, jit_compile):
    basic = _options_model("basic", seed=3, **OPTIONS[name])
    fused = _options_model("fused", seed=4, **OPTIONS[name])
    for a, b in zip(basic.trainable_variables, fused.trainable_variables, strict=True):
        b.assign(a)
    x, y = _ids(3, 6), _ids(3, 6, seed=1)
    masks = basic.dropout_masks(tf.constant([6, 6], tf.int64), 3, 6) if basic.uses_dropout else None
    want_cost, want_grads = _cost_and_grads(basic, x, y, masks)
    run = tf.function(lambda x, y, masks: _cost_and_grads(fused, x, y, masks),
                      jit_compile=jit_compile)
    cost, grads = run(x, y, masks)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-5)
    for g, w, v in zip(grads, want_grads, basic.trainable_variables):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=v.name)


def test_mask_rows_of_keep_masks_slice_rows_and_keep_per_batch_masks_whole():
    model = _options_model(**OPTIONS["all"])
    whole = model.dropout_masks(tf.constant([3, 9], tf.int64), batch_size=4, num_steps=5)
    halves = [model_lib.PTBModel.mask_rows(whole, 0, 1), model_lib.PTBModel.mask_rows(whole, 1, 4)]
    for group in ("sites", "recurrent"):
        for site, mask in enumerate(getattr(whole, group)):
            np.testing.assert_array_equal(
                np.concatenate([getattr(h, group)[site] for h in halves], axis=0), mask.numpy())
    for half in halves:
        assert half.weights is whole.weights and half.embedding is whole.embedding
    # Non-variational sites [T, B, H] are sliced on the batch axis.
    fresh = _options_model(keep_prob=0.5, weight_drop=0.5)
    masks = fresh.dropout_masks(tf.constant([1, 1], tf.int64), 4, 5)
    assert model_lib.PTBModel.mask_rows(masks, 1, 3).sites[0].shape == (5, 2, HIDDEN)


def test_model_on_row_ranges_with_mask_rows_equals_the_whole_batch():
    # What a data-parallel replica does: its rows, its rows' masks, the same numbers.
    model = _options_model(**OPTIONS["all"])
    x, seed = _ids(4, 5), tf.constant([2, 7], tf.int64)
    whole_masks = model.dropout_masks(seed, 4, 5)
    whole = model(x, model.zero_state(4), training=True, keep_masks=whole_masks)[0]
    parts = [model(x[start:stop], model.zero_state(stop - start), training=True,
                   keep_masks=model_lib.PTBModel.mask_rows(whole_masks, start, stop))[0]
             for start, stop in ((0, 1), (1, 4))]
    np.testing.assert_allclose(tf.concat(parts, 0), whole, atol=1e-6)


def test_checkpoint_from_fused_loads_in_basic_with_options_on(tmp_path):
    fused = _options_model("fused", seed=1, **OPTIONS["all"])
    path = tf.train.Checkpoint(model=fused).save(str(tmp_path / "ckpt"))
    basic = _options_model("basic", seed=2, **OPTIONS["all"])
    tf.train.Checkpoint(model=basic).restore(path).assert_existing_objects_matched()
    x, seed = _ids(2, 4), tf.constant([1, 5], tf.int64)
    for training in (False, True):
        np.testing.assert_allclose(
            basic(x, basic.zero_state(2), training=training, seed=seed)[0],
            fused(x, fused.zero_state(2), training=training, seed=seed)[0], atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_gru_and_rnn_models_run_in_basic_with_every_option(cell):
    model = _options_model("auto", cell=cell, **OPTIONS["all"])
    assert model.rnn_mode == "basic"
    assert all(c.name.startswith(cell) for c in model.cells)
    x, y = _ids(3, 4), _ids(3, 4, seed=1)
    masks = model.dropout_masks(tf.constant([1, 1], tf.int64), 3, 4)
    assert masks.weights[0].shape == model.cells[0].recurrent_shape
    with tf.GradientTape() as tape:
        logits, final = model(x, model.zero_state(3), training=True, keep_masks=masks)
        cost = model_lib.sequence_cost(logits, y)
    assert logits.shape == [3, 4, VOCAB] and final[0].shape == [3, HIDDEN]
    grads = tape.gradient(cost, model.trainable_variables)
    assert all(g is not None for g in grads)
    first, state = model(x[:, :2], model.zero_state(3))
    second, _ = model(x[:, 2:], state)
    np.testing.assert_allclose(tf.concat([first, second], 1), model(x, model.zero_state(3))[0],
                               atol=1e-5)


@pytest.mark.parametrize("rnn_mode, options, message", [
    ("fused", dict(cell="gru"), "rnn_mode fused runs only lstm cells, not cell=gru; use rnn_mode "
                                "basic"),
    ("block", dict(cell="rnn"), "rnn_mode block runs only lstm cells, not cell=rnn"),
    ("block", dict(variational_dropout=True, recurrent_keep_prob=0.5),
     r"rnn_mode block cannot drop the recurrent h"),
])
def test_model_refuses_a_kernel_that_cannot_run_its_options_in_one_line(rnn_mode, options,
                                                                        message):
    with pytest.raises(kernels.UnsupportedError, match=message) as info:
        _options_model(rnn_mode, **options)
    assert "\n" not in str(info.value)


def test_block_mode_runs_weight_drop_like_basic():
    basic = _options_model("basic", seed=3, **OPTIONS["weight_drop"], tie_embeddings=True)
    block = _options_model("block", seed=3, **OPTIONS["weight_drop"], tie_embeddings=True)
    x, seed = _ids(2, 5), tf.constant([9, 9], tf.int64)
    np.testing.assert_allclose(block(x, block.zero_state(2), training=True, seed=seed)[0],
                               basic(x, basic.zero_state(2), training=True, seed=seed)[0],
                               atol=1e-5)


@pytest.mark.skipif(kernels.gpu_available(), reason="this machine has a GPU")
def test_resolve_rnn_mode_is_the_kernel_the_model_runs():
    for config in (configs.SMALL, configs.AWD, configs.MEDIUM_TIED_VD,
                   dataclasses.replace(configs.SMALL, cell="gru")):
        small = dataclasses.replace(config, vocab_size=VOCAB, hidden_size=HIDDEN)
        for rnn_mode in ("auto", "basic"):
            assert (model_lib.resolve_rnn_mode(small, rnn_mode)
                    == model_lib.PTBModel.from_config(small, rnn_mode).rnn_mode)
    assert model_lib.resolve_rnn_mode(dataclasses.replace(configs.SMALL, cell="rnn")) == "basic"
    with pytest.raises(kernels.UnsupportedError, match="cannot drop the recurrent h"):
        model_lib.resolve_rnn_mode(configs.MEDIUM_TIED_VD, "block")
