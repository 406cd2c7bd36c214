"""Tests for rnn/cells.py: one step against NumPy, stacking, dropout, masked recurrence."""

import numpy as np
import pytest
import tensorflow as tf

from rnn import cells
from rnn.dynamic_rnn import dynamic_rnn
from numerics import maybe_function, numpy_initializer, sigmoid

BATCH, INPUT, UNITS = 3, 4, 5


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape)


def _lstm(forget_bias=1.0, dtype=tf.float64, input_size=INPUT):
    return cells.LSTMCell(UNITS, input_size, forget_bias=forget_bias,
                          kernel_initializer=numpy_initializer(1),
                          bias_initializer=numpy_initializer(2), dtype=dtype)


def _gru(dtype=tf.float64, input_size=INPUT):
    return cells.GRUCell(UNITS, input_size,
                         kernel_initializer=numpy_initializer(3),
                         bias_initializer=numpy_initializer(4), dtype=dtype)


def _basic(dtype=tf.float64, input_size=INPUT, activation=tf.tanh):
    return cells.BasicRNNCell(UNITS, input_size, activation=activation,
                              kernel_initializer=numpy_initializer(5),
                              bias_initializer=numpy_initializer(6),
                              dtype=dtype)


def _np_lstm_step(kernel, bias, forget_bias, x, c, h):
    gates = np.concatenate([x, h], axis=1) @ kernel + bias
    i, j, f, o = np.split(gates, 4, axis=1)
    new_c = sigmoid(f + forget_bias) * c + sigmoid(i) * np.tanh(j)
    return new_c, sigmoid(o) * np.tanh(new_c)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_lstm_cell_step_matches_numpy(mode):
    cell = _lstm(forget_bias=0.7)
    x, c, h = (_random([BATCH, n], s) for n, s in [(INPUT, 0), (UNITS, 1),
                                                    (UNITS, 2)])
    step = maybe_function(lambda x, s: cell(x, s), mode)
    output, state = step(tf.constant(x), cells.LSTMStateTuple(c, h))
    want_c, want_h = _np_lstm_step(cell.kernel.numpy(), cell.bias.numpy(),
                                   0.7, x, c, h)
    assert isinstance(state, cells.LSTMStateTuple)
    np.testing.assert_allclose(state.c, want_c, rtol=1e-12)
    np.testing.assert_allclose(state.h, want_h, rtol=1e-12)
    np.testing.assert_allclose(output, want_h, rtol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_gru_cell_step_matches_numpy(mode):
    cell = _gru()
    x, h = _random([BATCH, INPUT], 0), _random([BATCH, UNITS], 1)
    step = maybe_function(lambda x, s: cell(x, s), mode)
    output, state = step(tf.constant(x), tf.constant(h))
    gates = sigmoid(np.concatenate([x, h], 1) @ cell.gates_kernel.numpy()
                     + cell.gates_bias.numpy())
    r, u = np.split(gates, 2, axis=1)
    cand = np.tanh(np.concatenate([x, r * h], 1)
                   @ cell.candidate_kernel.numpy()
                   + cell.candidate_bias.numpy())
    want = u * h + (1 - u) * cand
    np.testing.assert_allclose(output, want, rtol=1e-12)
    np.testing.assert_allclose(state, want, rtol=1e-12)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_basic_rnn_cell_step_matches_numpy(mode):
    cell = _basic(activation=tf.nn.relu)
    x, h = _random([BATCH, INPUT], 0), _random([BATCH, UNITS], 1)
    step = maybe_function(lambda x, s: cell(x, s), mode)
    output, state = step(tf.constant(x), tf.constant(h))
    want = np.maximum(np.concatenate([x, h], 1) @ cell.kernel.numpy()
                      + cell.bias.numpy(), 0.0)
    np.testing.assert_allclose(output, want, rtol=1e-12)
    np.testing.assert_allclose(state, want, rtol=1e-12)


@pytest.mark.parametrize("make_cell", [_lstm, _gru, _basic])
def test_cell_project_inputs_then_step_equals_call(make_cell):
    cell = make_cell()
    inputs = tf.constant(_random([2, BATCH, INPUT], 0))  # [time, batch, in]
    state = tf.nest.map_structure(
        lambda s: tf.constant(_random(s.shape, 1)), cell.zero_state(BATCH))
    projected = cell.project_inputs(inputs)  # all steps in one call
    for t in range(2):
        want_out, want_state = cell(inputs[t], state)
        for weights in (None, cell.recurrent_weights()):
            got_out, got_state = cell.step_projected(projected[t], state,
                                                     weights)
            np.testing.assert_allclose(got_out, want_out, rtol=1e-12)
            tf.nest.map_structure(
                lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-12),
                got_state, want_state)


def test_lstm_cell_variables_exist_before_first_call(tmp_path):
    cell = cells.LSTMCell(UNITS, INPUT, forget_bias=0.0)
    assert cell.kernel.shape == [INPUT + UNITS, 4 * UNITS]
    assert cell.bias.shape == [4 * UNITS]
    assert (cell.input_size, cell.num_units, cell.forget_bias) == (
        INPUT, UNITS, 0.0)
    assert len(cell.trainable_variables) == 2
    np.testing.assert_array_equal(cell.bias, np.zeros(4 * UNITS))
    # Checkpointable without ever being called.
    path = tf.train.Checkpoint(cell=cell).save(str(tmp_path / "ckpt"))
    other = cells.LSTMCell(UNITS, INPUT)
    tf.train.Checkpoint(cell=other).restore(path).assert_consumed()
    np.testing.assert_array_equal(other.kernel, cell.kernel)


def test_gru_cell_default_biases_follow_tf1():
    cell = cells.GRUCell(UNITS, INPUT)
    np.testing.assert_array_equal(cell.gates_bias, np.ones(2 * UNITS))
    np.testing.assert_array_equal(cell.candidate_bias, np.zeros(UNITS))
    assert cell.gates_kernel.shape == [INPUT + UNITS, 2 * UNITS]
    assert cell.candidate_kernel.shape == [INPUT + UNITS, UNITS]


def test_glorot_uniform_default_kernel_in_range():
    cell = cells.BasicRNNCell(UNITS, INPUT)
    limit = np.sqrt(6.0 / (INPUT + UNITS + UNITS))
    assert np.abs(cell.kernel.numpy()).max() <= limit
    assert np.abs(cell.kernel.numpy()).max() > 0


def test_zero_state_matches_state_size():
    cell = _lstm(dtype=tf.float32)
    state = cell.zero_state(BATCH)
    assert isinstance(state, cells.LSTMStateTuple)
    assert state.c.shape == [BATCH, UNITS] and state.c.dtype == tf.float32
    assert cell.zero_state(BATCH, tf.float64).h.dtype == tf.float64


def test_multi_rnn_cell_state_structure():
    stack = cells.MultiRNNCell([_lstm(), _gru(input_size=UNITS)])
    assert stack.state_size == (cells.LSTMStateTuple(UNITS, UNITS), UNITS)
    assert stack.output_size == UNITS
    state = stack.zero_state(BATCH)
    assert isinstance(state, tuple) and len(state) == 2
    assert isinstance(state[0], cells.LSTMStateTuple)
    assert state[1].shape == [BATCH, UNITS]


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_multi_rnn_cell_equals_manual_stacking(mode):
    bottom, top = _lstm(), _basic(input_size=UNITS)
    stack = cells.MultiRNNCell([bottom, top])
    x = tf.constant(_random([BATCH, INPUT], 0))
    state = (cells.LSTMStateTuple(*(tf.constant(_random([BATCH, UNITS], s))
                                    for s in (1, 2))),
             tf.constant(_random([BATCH, UNITS], 3)))
    output, new_state = maybe_function(lambda x, s: stack(x, s), mode)(
        x, state)
    mid, want_bottom = bottom(x, state[0])
    want_out, want_top = top(mid, state[1])
    np.testing.assert_allclose(output, want_out, rtol=1e-12)
    np.testing.assert_allclose(new_state[0].c, want_bottom.c, rtol=1e-12)
    np.testing.assert_allclose(new_state[1], want_top, rtol=1e-12)


def test_multi_rnn_cell_forwards_training():
    stack = cells.MultiRNNCell(
        [cells.DropoutWrapper(_basic(), output_keep_prob=0.5, seed=1)])
    x = tf.ones([BATCH, INPUT], tf.float64)
    state = stack.zero_state(BATCH)
    eval_out, _ = stack(x, state, training=False)
    train_out, _ = stack(x, state, training=True)
    assert np.any(train_out.numpy() == 0.0)
    assert not np.any(eval_out.numpy() == 0.0)


def _identity_cell(size):
    """BasicRNNCell whose output equals its input (identity x-part, no h)."""
    kernel = np.concatenate([np.eye(size), np.zeros([size, size])])
    return cells.BasicRNNCell(
        size, size, activation=tf.identity,
        kernel_initializer=lambda shape, dtype: tf.constant(kernel, dtype),
        dtype=tf.float64)


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_dropout_wrapper_identity_when_not_training(mode):
    cell = _lstm()
    wrapped = cells.DropoutWrapper(cell, 0.5, 0.5, 0.5, seed=0)
    x = tf.constant(_random([BATCH, INPUT], 0))
    state = cell.zero_state(BATCH)
    got_out, got_state = maybe_function(
        lambda x, s: wrapped(x, s, training=False), mode)(x, state)
    want_out, want_state = cell(x, state)
    np.testing.assert_array_equal(got_out, want_out)
    np.testing.assert_array_equal(got_state.h, want_state.h)


@pytest.mark.parametrize("where", ["input", "output"])
@pytest.mark.parametrize("mode", ["eager", "function"])
def test_dropout_wrapper_drops_fraction_and_scales_when_training(where, mode):
    keep = 0.7
    wrapped = cells.DropoutWrapper(_identity_cell(50),
                                   **{f"{where}_keep_prob": keep}, seed=3)
    x = tf.ones([200, 50], tf.float64)
    step = maybe_function(lambda x, s: wrapped(x, s, training=True), mode)
    output, _ = step(x, wrapped.zero_state(200))
    values = np.unique(output.numpy())
    np.testing.assert_allclose(values, [0.0, 1.0 / keep])
    dropped = np.mean(output.numpy() == 0.0)
    assert abs(dropped - (1.0 - keep)) < 0.02  # 10,000 draws: ~4.5 sigma


def test_dropout_wrapper_state_dropout_leaves_lstm_c_alone():
    cell = _lstm()
    wrapped = cells.DropoutWrapper(cell, state_keep_prob=0.5, seed=0)
    x = tf.constant(_random([20, INPUT], 0))
    state = cell.zero_state(20)
    output, new_state = wrapped(x, state, training=True)
    want_out, want_state = cell(x, state)
    np.testing.assert_array_equal(new_state.c, want_state.c)
    np.testing.assert_array_equal(output, want_out)  # output dropout is off
    h = new_state.h.numpy()
    assert np.any(h == 0.0)
    kept = h != 0.0
    np.testing.assert_allclose(h[kept], want_state.h.numpy()[kept] / 0.5)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_dropout_wrapper_rejects_bad_keep_prob(bad):
    with pytest.raises(ValueError, match="output_keep_prob must be in"):
        cells.DropoutWrapper(_basic(), output_keep_prob=bad)


def test_dropout_wrapper_has_no_projection():
    wrapped = cells.DropoutWrapper(_lstm(), input_keep_prob=0.5)
    assert not hasattr(wrapped, "project_inputs")


def test_dropout_wrapper_masks_resume_from_checkpoint(tmp_path):
    wrapped = cells.DropoutWrapper(_identity_cell(8), input_keep_prob=0.5,
                                   seed=7)
    x = tf.ones([4, 8], tf.float64)
    state = wrapped.zero_state(4)
    path = tf.train.Checkpoint(cell=wrapped).save(str(tmp_path / "ckpt"))
    first, _ = wrapped(x, state, training=True)
    wrapped(x, state, training=True)  # advance the generator past `first`
    tf.train.Checkpoint(cell=wrapped).restore(path)
    resumed, _ = wrapped(x, state, training=True)
    np.testing.assert_array_equal(resumed, first)


def _np_masked_steps(kind, cell, x_seq, state, recurrent_mask, weight_mask):
    """NumPy: every step's h_{t-1} * recurrent_mask meets W_h * weight_mask; the same masks
    at every step; the carried state is not masked."""
    n = INPUT
    outputs = []
    for x in x_seq:
        if kind == "lstm":
            kernel = cell.kernel.numpy().copy()
            kernel[n:] *= weight_mask
            c, h = state
            gates = x @ kernel[:n] + (h * recurrent_mask) @ kernel[n:] + cell.bias.numpy()
            i, j, f, o = np.split(gates, 4, axis=1)
            c = sigmoid(f + cell.forget_bias) * c + sigmoid(i) * np.tanh(j)
            h = sigmoid(o) * np.tanh(c)
            state, out = (c, h), h
        elif kind == "gru":
            gk, ck = cell.gates_kernel.numpy().copy(), cell.candidate_kernel.numpy().copy()
            gk[n:] *= weight_mask[:, :2 * UNITS]
            ck[n:] *= weight_mask[:, 2 * UNITS:]
            dropped = state * recurrent_mask
            r, u = np.split(sigmoid(x @ gk[:n] + dropped @ gk[n:] + cell.gates_bias.numpy()), 2,
                            axis=1)
            cand = np.tanh(x @ ck[:n] + (r * dropped) @ ck[n:] + cell.candidate_bias.numpy())
            state = out = u * state + (1 - u) * cand
        else:
            kernel = cell.kernel.numpy().copy()
            kernel[n:] *= weight_mask
            state = out = np.tanh(x @ kernel[:n] + (state * recurrent_mask) @ kernel[n:]
                                  + cell.bias.numpy())
        outputs.append(out)
    return np.stack(outputs), state


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_masked_recurrence_matches_numpy_with_masks_held_over_time(kind, mode):
    cell = {"lstm": _lstm, "gru": _gru, "rnn": _basic}[kind]()
    rng = np.random.default_rng(7)
    # Masks as the model hands them over: 0 or 1/keep.
    recurrent_mask = (rng.random([BATCH, UNITS]) < 0.6) / 0.6
    weight_mask = (rng.random(cell.recurrent_shape) < 0.5) / 0.5
    x_seq = _random([4, BATCH, INPUT], 8)  # [time, batch, in], time-major
    state = cell.zero_state(BATCH)
    state = tf.nest.map_structure(lambda s: s + _random(s.shape, 9), state)
    masked = cells.MaskedRecurrence(cell, tf.constant(recurrent_mask), tf.constant(weight_mask))
    run = maybe_function(lambda x, s: dynamic_rnn(masked, x, s, time_major=True), mode)
    outputs, final = run(tf.constant(x_seq), state)
    want_outputs, want_final = _np_masked_steps(
        kind, cell, x_seq, tf.nest.map_structure(np.asarray, state), recurrent_mask, weight_mask)
    np.testing.assert_allclose(outputs, want_outputs, rtol=1e-10, atol=1e-12)
    for got, want in zip(tf.nest.flatten(final), tf.nest.flatten(want_final)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make_cell", [_lstm, _gru, _basic])
def test_masked_recurrence_without_masks_is_the_cell(make_cell):
    cell = make_cell()
    x = tf.constant(_random([BATCH, INPUT], 10))
    state = cell.zero_state(BATCH)
    want = cell(x, state)
    got = cells.MaskedRecurrence(cell)(x, state)
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
        np.testing.assert_array_equal(a, b)
    assert cell.recurrent_shape[0] == UNITS
