"""Tests for rnn/dynamic_rnn.py against a Python loop over the same cell."""

import numpy as np
import pytest
import tensorflow as tf

from rnn import cells
from rnn.dynamic_rnn import dynamic_rnn
from numerics import maybe_function, numpy_initializer

BATCH, STEPS, INPUT, UNITS = 3, 4, 2, 3


def _random(shape, seed):
    return tf.constant(np.random.default_rng(seed).normal(size=shape))


def _lstm(input_size=INPUT, units=UNITS):
    return cells.LSTMCell(units, input_size, forget_bias=0.5,
                          kernel_initializer=numpy_initializer(1),
                          bias_initializer=numpy_initializer(2),
                          dtype=tf.float64)


def _gru(input_size=INPUT):
    return cells.GRUCell(UNITS, input_size,
                         kernel_initializer=numpy_initializer(3),
                         bias_initializer=numpy_initializer(4),
                         dtype=tf.float64)


def _basic(input_size=INPUT):
    return cells.BasicRNNCell(UNITS, input_size,
                              kernel_initializer=numpy_initializer(5),
                              dtype=tf.float64)


def _multi():
    return cells.MultiRNNCell([_lstm(), _gru(input_size=UNITS)])


def _dropout():
    return cells.DropoutWrapper(_lstm(), 0.5, 0.5, 0.5, seed=0)


CELLS = {"lstm": _lstm, "gru": _gru, "basic": _basic, "multi": _multi,
         "dropout": _dropout}


def _random_state(cell, seed):
    zeros = cell.zero_state(BATCH)
    flat = [_random(z.shape, seed + k)
            for k, z in enumerate(tf.nest.flatten(zeros))]
    return tf.nest.pack_sequence_as(zeros, flat)


def _python_loop(cell, inputs, state, lengths=None, training=False):
    """Reference: inputs [batch, time, depth]; plain per-step calls."""
    outputs = []
    for t in range(inputs.shape[1]):
        output, new_state = cell(inputs[:, t], state, training=training)
        if lengths is not None:
            alive = (t < np.asarray(lengths))[:, None]
            output = tf.where(alive, output, tf.zeros_like(output))
            new_state = tf.nest.map_structure(
                lambda n, o: tf.where(alive, n, o), new_state, state)
        outputs.append(output)
        state = new_state
    return tf.stack(outputs, axis=1), state


def _assert_close(got, want, rtol=1e-12):
    tf.nest.assert_same_structure(got, want)
    tf.nest.map_structure(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-14),
        got, want)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("kind", sorted(CELLS))
def test_dynamic_rnn_matches_python_loop(kind, time_major, mode):
    cell = CELLS[kind]()
    inputs = _random([BATCH, STEPS, INPUT], 0)  # [batch, time, depth]
    state = _random_state(cell, 10)
    feed = tf.transpose(inputs, [1, 0, 2]) if time_major else inputs
    run = maybe_function(
        lambda x, s: dynamic_rnn(cell, x, s, time_major=time_major), mode)
    outputs, final = run(feed, state)
    if time_major:
        outputs = tf.transpose(outputs, [1, 0, 2])
    want_outputs, want_final = _python_loop(cell, inputs, state)
    _assert_close(outputs, want_outputs)
    _assert_close(final, want_final)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_dynamic_rnn_with_dropout_on_matches_python_loop(mode):
    # Two wrappers with the same seed draw the same masks in the same order.
    cell, reference = _dropout(), _dropout()
    inputs = _random([BATCH, STEPS, INPUT], 0)  # [batch, time, depth]
    state = _random_state(cell, 10)
    run = maybe_function(lambda x, s: dynamic_rnn(cell, x, s, training=True), mode)
    outputs, final = run(inputs, state)
    want_outputs, want_final = _python_loop(reference, inputs, state, training=True)
    _assert_close(outputs, want_outputs)
    _assert_close(final, want_final)
    # Dropout really was on: some outputs zeroed, unlike the same cell not training.
    plain, _ = dynamic_rnn(cell, inputs, state, training=False)
    assert np.mean(outputs.numpy() == 0.0) > 0.2
    assert np.mean(plain.numpy() == 0.0) == 0.0


class _CountingLSTM(cells.LSTMCell):
    """LSTMCell that records how it was driven."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.projections, self.calls = [], 0

    def project_inputs(self, inputs):
        self.projections.append(inputs.shape.rank)
        return super().project_inputs(inputs)

    def __call__(self, inputs, state, training=False):
        self.calls += 1
        return super().__call__(inputs, state, training)


def test_dynamic_rnn_projects_all_steps_in_one_call():
    cell = _CountingLSTM(UNITS, INPUT, dtype=tf.float64)
    tf.function(lambda x: dynamic_rnn(cell, x))(_random([BATCH, STEPS, INPUT],
                                                        0))
    assert cell.projections == [3]  # once, on [time, batch, depth]
    assert cell.calls == 0


class _TwoMethodCell(cells.RNNCell):
    """Only project_inputs/step_projected(x, state), no recurrent_weights."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.steps = 0

    state_size = property(lambda self: self.cell.state_size)
    output_size = property(lambda self: self.cell.output_size)
    dtype = property(lambda self: self.cell.dtype)

    def project_inputs(self, inputs):
        return self.cell.project_inputs(inputs)

    def step_projected(self, projected_t, state):
        self.steps += 1
        return self.cell.step_projected(projected_t, state)


def test_dynamic_rnn_accepts_projection_without_recurrent_weights():
    cell = _TwoMethodCell(_lstm())
    inputs = _random([BATCH, STEPS, INPUT], 0)
    got = dynamic_rnn(cell, inputs)
    assert cell.steps == STEPS
    _assert_close(got, _python_loop(cell.cell, inputs, cell.zero_state(BATCH)))


def test_dynamic_rnn_default_initial_state_is_zero():
    cell = _lstm()
    inputs = _random([BATCH, STEPS, INPUT], 0)
    got = dynamic_rnn(cell, inputs)
    want = dynamic_rnn(cell, inputs, cell.zero_state(BATCH))
    _assert_close(got, want)


def test_dynamic_rnn_forwards_training():
    cell = cells.DropoutWrapper(_basic(), output_keep_prob=0.5, seed=0)
    inputs = _random([BATCH, STEPS, INPUT], 0)
    eval_outputs, _ = dynamic_rnn(cell, inputs, training=False)
    train_outputs, _ = dynamic_rnn(cell, inputs, training=True)
    assert not np.any(eval_outputs.numpy() == 0.0)
    assert np.any(train_outputs.numpy() == 0.0)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("kind", ["lstm", "multi"])
def test_dynamic_rnn_sequence_length_masks_outputs_and_freezes_state(
        kind, mode):
    cell = CELLS[kind]()
    lengths = [2, 0, STEPS]
    inputs = _random([BATCH, STEPS, INPUT], 0)
    state = _random_state(cell, 10)
    run = maybe_function(
        lambda x, s, n: dynamic_rnn(cell, x, s, sequence_length=n), mode)
    outputs, final = run(inputs, state, tf.constant(lengths))
    want_outputs, want_final = _python_loop(cell, inputs, state, lengths)
    _assert_close(outputs, want_outputs)
    _assert_close(final, want_final)
    np.testing.assert_array_equal(outputs[0, 2:], 0.0)
    np.testing.assert_array_equal(outputs[1], 0.0)
    # A length-0 row keeps its initial state; a length-2 row its step-2 state.
    _assert_close(tf.nest.map_structure(lambda s: s[1], final),
                  tf.nest.map_structure(lambda s: s[1], state))
    _, state_at_2 = _python_loop(cell, inputs[:, :2], state)
    _assert_close(tf.nest.map_structure(lambda s: s[0], final),
                  tf.nest.map_structure(lambda s: s[0], state_at_2))


def test_dynamic_rnn_unknown_time_dimension_under_function():
    cell = _lstm()
    spec = tf.TensorSpec([None, None, INPUT], tf.float64)
    run = tf.function(lambda x: dynamic_rnn(cell, x), input_signature=[spec])
    outputs, final = run(tf.zeros([BATCH, 0, INPUT], tf.float64))  # unknown batch, no steps
    assert outputs.shape.as_list() == [BATCH, 0, UNITS]
    _assert_close(final, cell.zero_state(BATCH))
    for steps in (1, 6):
        inputs = _random([BATCH, steps, INPUT], steps)
        outputs, final = run(inputs)
        want_outputs, want_final = _python_loop(
            cell, inputs, cell.zero_state(BATCH))
        _assert_close(outputs, want_outputs)
        _assert_close(final, want_final)
    graph_outputs = run.get_concrete_function().structured_outputs[0]
    assert graph_outputs.shape.as_list() == [None, None, UNITS]


def test_dynamic_rnn_keeps_static_shapes():
    cell = _lstm()

    @tf.function
    def shapes(x):
        outputs, final = dynamic_rnn(cell, x)
        assert outputs.shape.as_list() == [BATCH, STEPS, UNITS]
        assert final.c.shape.as_list() == [BATCH, UNITS]
        return outputs
    shapes(_random([BATCH, STEPS, INPUT], 0))


def test_dynamic_rnn_zero_steps_returns_initial_state():
    cell = _lstm()
    state = _random_state(cell, 10)
    outputs, final = dynamic_rnn(cell, tf.zeros([BATCH, 0, INPUT], tf.float64),
                                 state)
    assert outputs.shape.as_list() == [BATCH, 0, UNITS]
    _assert_close(final, state)


def _loss_through_rnn(cell, inputs, state):
    """Scalar touching every output and the final state with fixed weights."""
    outputs, final = dynamic_rnn(cell, inputs, state)
    weights = _random(outputs.shape, 99)
    flat_final = tf.concat(tf.nest.flatten(final), axis=1)
    return (tf.reduce_sum(outputs * weights)
            + tf.reduce_sum(flat_final * _random(flat_final.shape, 98)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dynamic_rnn_gradient_matches_numeric(kind):
    cell = CELLS[kind]()
    inputs = _random([2, 3, INPUT], 0)
    state = tf.nest.map_structure(lambda s: s[:2], _random_state(cell, 10))
    flat_state = tf.nest.flatten(state)

    def loss(x, *flat):
        return _loss_through_rnn(
            cell, x, tf.nest.pack_sequence_as(state, list(flat)))

    theoretical, numerical = tf.test.compute_gradient(
        loss, [inputs] + flat_state)
    for got, want in zip(theoretical, numerical):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    _check_variable_gradients(cell, lambda: loss(inputs, *flat_state))


def _check_variable_gradients(cell, loss, eps=1e-6):
    """Tape gradients of the variables against central finite differences."""
    with tf.GradientTape() as tape:
        value = loss()
    grads = tape.gradient(value, cell.trainable_variables)
    for variable, grad in zip(cell.trainable_variables, grads):
        flat = np.ravel(variable.numpy())
        numeric = np.zeros_like(flat)
        for k in range(flat.size):
            for sign in (1.0, -1.0):
                bumped = flat.copy()
                bumped[k] += sign * eps
                variable.assign(bumped.reshape(variable.shape))
                numeric[k] += sign * loss().numpy() / (2 * eps)
            variable.assign(flat.reshape(variable.shape))
        np.testing.assert_allclose(np.ravel(grad), numeric, rtol=1e-6,
                                   atol=1e-8, err_msg=variable.name)


def test_dynamic_rnn_gradients_flow_under_function():
    cell = _multi()
    inputs = _random([BATCH, STEPS, INPUT], 0)
    state = _random_state(cell, 10)

    @tf.function
    def grads(x, s):
        with tf.GradientTape() as tape:
            tape.watch([x, s])
            value = _loss_through_rnn(cell, x, s)
        return tape.gradient(value, [x, s, cell.trainable_variables])

    eager = grads.python_function(inputs, state)
    traced = grads(inputs, state)
    assert all(g is not None for g in tf.nest.flatten(traced))
    _assert_close(traced, eager, rtol=1e-10)
