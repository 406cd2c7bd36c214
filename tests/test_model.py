"""Tests of PTBModel: initialisation, state carrying, modes, dropout, the cost."""

import numpy as np
import pytest
import tensorflow as tf

import model as model_lib

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
