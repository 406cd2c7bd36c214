"""Tests for rnn/kernels.py and rnn/fused_lstm.py: the kernel table; BlockLSTM and fused_lstm vs
dynamic_rnn, with recurrent and weight masks too; cuDNN."""

import numpy as np
import pytest
import tensorflow as tf

import errors
from rnn import cells, fused_lstm, kernels, loop_forms
from rnn.dynamic_rnn import dynamic_rnn
from numerics import maybe_function, numpy_initializer, sigmoid

STEPS, BATCH, INPUT, UNITS = 5, 3, 4, 6


def _random(shape, seed, scale=1.0, dtype=tf.float32):
    values = scale * np.random.default_rng(seed).normal(size=shape)
    return tf.constant(values, dtype=dtype)


def _lstm(forget_bias=0.7, dtype=tf.float32, activation=tf.tanh):
    return cells.LSTMCell(UNITS, INPUT, forget_bias=forget_bias,
                          activation=activation,
                          kernel_initializer=numpy_initializer(1),
                          bias_initializer=numpy_initializer(2), dtype=dtype)


def _sequence_and_state(dtype=tf.float32, steps=STEPS):
    # [time, batch, in], time-major
    inputs = _random([steps, BATCH, INPUT], 0, dtype=dtype)
    # |c| well above 3 would show up if BlockLSTM's default clip (3.0) leaked.
    state = cells.LSTMStateTuple(
        _random([BATCH, UNITS], 1, scale=8.0, dtype=dtype),
        _random([BATCH, UNITS], 2, dtype=dtype))
    return inputs, state


def _reference(cell, inputs, state):
    return dynamic_rnn(cell, inputs, state, time_major=True)


def _assert_close(got, want, rtol=1e-5, atol=1e-5):
    tf.nest.assert_same_structure(got, want)
    tf.nest.map_structure(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=rtol, atol=atol),
        got, want)


@pytest.mark.parametrize("mode", ["eager", "function"])
@pytest.mark.parametrize("forget_bias", [0.0, 0.7])
def test_block_lstm_matches_dynamic_rnn(forget_bias, mode):
    cell = _lstm(forget_bias=forget_bias)
    inputs, state = _sequence_and_state()
    run = maybe_function(lambda x, s: kernels.block_lstm(cell, x, s), mode)
    outputs, final = run(inputs, state)
    assert outputs.shape.as_list() == [STEPS, BATCH, UNITS]
    assert isinstance(final, cells.LSTMStateTuple)
    _assert_close((outputs, final), _reference(cell, inputs, state))


def test_block_lstm_does_not_clip_cell_state():
    # BlockLSTM clips |c| to 3 by default; a large forget bias keeps the
    # initial |c| of up to ~20 alive, so any clipping would show.
    cell = _lstm(forget_bias=5.0)
    inputs, state = _sequence_and_state()
    outputs, final = kernels.block_lstm(cell, inputs, state)
    assert np.abs(final.c.numpy()).max() > 3.0
    _assert_close((outputs, final), _reference(cell, inputs, state))


def _gradients(run, cell, inputs, state):
    """d(loss)/d(kernel, bias, inputs, c0, h0) of a loss touching all outputs."""
    with tf.GradientTape() as tape:
        tape.watch([inputs, state])
        outputs, final = run(cell, inputs, state)
        weights = [_random(x.shape, seed, dtype=x.dtype)
                   for x, seed in ((outputs, 5), (final.c, 6), (final.h, 7))]
        loss = (tf.reduce_sum(outputs * weights[0])
                + tf.reduce_sum(final.c * weights[1])
                + tf.reduce_sum(final.h * weights[2]))
    return tape.gradient(loss, [cell.kernel, cell.bias, inputs, state])


@pytest.mark.parametrize("mode", ["eager", "function"])
def test_block_lstm_gradients_match_dynamic_rnn(mode):
    cell = _lstm()
    inputs, state = _sequence_and_state()
    grads = maybe_function(_gradients, mode)
    got = grads(kernels.block_lstm, cell, inputs, state)
    want = grads(_reference, cell, inputs, state)
    assert all(g is not None for g in tf.nest.flatten(got))
    _assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_block_lstm_rejects_unfusable_cells():
    inputs, state = _sequence_and_state()
    with pytest.raises(ValueError, match="only tanh"):
        kernels.block_lstm(_lstm(activation=tf.nn.relu), inputs, state)
    with pytest.raises(ValueError, match="float32/float16"):
        kernels.block_lstm(_lstm(dtype=tf.float64), inputs, state)


_TOLERANCE = {tf.float64: 1e-10, tf.float32: 2e-5}


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("dtype", [tf.float64, tf.float32])
@pytest.mark.parametrize("forget_bias", [0.0, 0.7])
def test_fused_lstm_matches_dynamic_rnn(forget_bias, dtype, mode):
    cell = _lstm(forget_bias=forget_bias, dtype=dtype)
    inputs, state = _sequence_and_state(dtype)
    run = maybe_function(lambda x, s: fused_lstm.fused_lstm(cell, x, s), mode)
    outputs, final = run(inputs, state)
    assert outputs.shape.as_list() == [STEPS, BATCH, UNITS]
    assert isinstance(final, cells.LSTMStateTuple)
    tol = _TOLERANCE[dtype]
    _assert_close((outputs, final), _reference(cell, inputs, state),
                  rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("dtype", [tf.float64, tf.float32])
def test_gate_activations_as_one_expression_are_the_per_gate_ones(dtype, mode):
    # The while loop's one select over [batch, 4H] and the unrolled per-gate ops:
    # bit for bit under XLA; TensorFlow's own kernels may round the last bit of
    # an element differently by where it falls in a vector register.
    gates = _random([BATCH, 4 * UNITS], 3, scale=4.0, dtype=dtype)
    acts = [maybe_function(fused_lstm._activations(UNITS, 0.7, dtype, one), mode)(gates)
            for one in (True, False)]
    if mode == "jit":
        np.testing.assert_array_equal(acts[0], acts[1])
    np.testing.assert_allclose(acts[0], acts[1], rtol=2 * np.finfo(dtype.as_numpy_dtype).eps)
    x = gates.numpy()
    want = np.concatenate([sigmoid(x[:, :UNITS]), np.tanh(x[:, UNITS:2 * UNITS]),
                           sigmoid(x[:, 2 * UNITS:3 * UNITS] + 0.7),
                           sigmoid(x[:, 3 * UNITS:])], axis=1)
    np.testing.assert_allclose(acts[0], want, rtol=1e-6)


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("dtype", [tf.float64, tf.float32])
@pytest.mark.parametrize("forget_bias", [0.0, 0.7])
def test_fused_lstm_gradients_match_dynamic_rnn(forget_bias, dtype, mode):
    # Upstream gradients on the outputs and on both halves of the final state.
    cell = _lstm(forget_bias=forget_bias, dtype=dtype)
    inputs, state = _sequence_and_state(dtype)
    got = maybe_function(_gradients, mode)(fused_lstm.fused_lstm, cell, inputs,
                                            state)
    want = _gradients(_reference, cell, inputs, state)
    assert all(g is not None for g in tf.nest.flatten(got))
    tol = _TOLERANCE[dtype]
    _assert_close(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("steps", [1, 2])
def test_fused_lstm_short_sequences_match_dynamic_rnn(steps, mode):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64, steps=steps)
    got = maybe_function(_gradients, mode)(fused_lstm.fused_lstm, cell, inputs,
                                            state)
    _assert_close(got, _gradients(_reference, cell, inputs, state),
                  rtol=1e-10, atol=1e-10)
    _assert_close(fused_lstm.fused_lstm(cell, inputs, state),
                  _reference(cell, inputs, state), rtol=1e-10, atol=1e-10)


def _unrolled(cell, inputs, state):
    return fused_lstm.fused_lstm(cell, inputs, state, unroll=True)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("steps", [1, STEPS])
def test_fused_lstm_unrolled_matches_while_loop(steps, mode):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64, steps=steps)
    run = maybe_function(lambda f, x, s: f(cell, x, s), mode)
    _assert_close(run(_unrolled, inputs, state),
                  run(fused_lstm.fused_lstm, inputs, state),
                  rtol=1e-12, atol=1e-12)
    grads = maybe_function(_gradients, mode)
    got = grads(_unrolled, cell, inputs, state)
    assert all(g is not None for g in tf.nest.flatten(got))
    _assert_close(got, grads(fused_lstm.fused_lstm, cell, inputs, state),
                  rtol=1e-12, atol=1e-12)


def _has_while_loop(run, cell, inputs, state):
    """Whether the traced forward-and-gradient graph contains a while op."""
    graph = tf.function(_gradients).get_concrete_function(
        run, cell, inputs, state).graph
    return any(op.type in ("While", "StatelessWhile")
               for op in graph.get_operations())


def test_fused_lstm_unroll_leaves_no_while_loop():
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    assert _has_while_loop(fused_lstm.fused_lstm, cell, inputs, state)
    assert not _has_while_loop(_unrolled, cell, inputs, state)


def _traced_nodes(run, cell, inputs, state, jit=True, gradients=True):
    """The nodes of the forward-and-gradient graph traced (under XLA with `jit`; the forward
    alone without `gradients`), the bodies of its while loops included (each once, not per
    step)."""
    traced = _gradients if gradients else (lambda run, cell, x, s: run(cell, x, s))
    graph_def = tf.function(traced, jit_compile=jit).get_concrete_function(
        run, cell, inputs, state).graph.as_graph_def()
    return list(graph_def.node) + [
        node for function in graph_def.library.function for node in function.node_def]


def _row_contracted_matmuls(*args, **kwargs):
    """MatMuls with transpose_b in _traced_nodes(*args, **kwargs)."""
    return sum(node.op == "MatMul" and node.attr["transpose_b"].b
               for node in _traced_nodes(*args, **kwargs))


def _transposes(*args, **kwargs):
    """Transpose ops in _traced_nodes(*args, **kwargs)."""
    return sum(node.op == "Transpose" for node in _traced_nodes(*args, **kwargs))


_NEVER = loop_forms.LoopForms(copying=None, backward=None, own_forward=None)


def _contract_rows(monkeypatch, *loops):
    """Under XLA the named loops (LoopForms fields) contract rows at every size, the
    others never, whatever this host's CPU chose."""
    monkeypatch.setattr(loop_forms, "CHOSEN",
                        _NEVER._replace(**{loop: 0 for loop in loops}))


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("run", [fused_lstm.fused_lstm, _unrolled])
def test_fused_lstm_with_row_contracted_weights_matches_dynamic_rnn(run, mode, monkeypatch):
    # The per-step matmul form of large weights under XLA, here forced for both loops
    # (and, eager, run on TensorFlow's kernels).
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    _contract_rows(monkeypatch, "copying", "backward", "own_forward")
    monkeypatch.setattr(fused_lstm, "_compiled_by_xla", lambda: True)
    assert _row_contracted_matmuls(run, cell, inputs, state, jit=False) > 0
    got = maybe_function(lambda x, s: run(cell, x, s), mode)(inputs, state)
    _assert_close(got, _reference(cell, inputs, state), rtol=1e-10, atol=1e-10)
    grads = maybe_function(_gradients, mode)(run, cell, inputs, state)
    _assert_close(grads, _gradients(_reference, cell, inputs, state),
                  rtol=1e-10, atol=1e-10)


def test_unrolled_fused_lstm_contracts_rows_by_the_copying_threshold_only(monkeypatch):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    _contract_rows(monkeypatch)
    none = _row_contracted_matmuls(_unrolled, cell, inputs, state)
    _contract_rows(monkeypatch, "backward", "own_forward")  # the while loops'
    assert _row_contracted_matmuls(_unrolled, cell, inputs, state) == none
    _contract_rows(monkeypatch, "copying")
    # One per step forward (h @ W_h) and one per step backward (dgates @ W_h^T).
    assert _row_contracted_matmuls(_unrolled, cell, inputs, state) == none + 2 * STEPS


def test_while_loops_in_a_compiled_step_contract_rows_by_their_thresholds(monkeypatch):
    # Inside a whole compiled step the forward loop follows `copying`, the backward loop
    # `backward`; `own_forward` is a forward loop compiled on its own.
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    run = fused_lstm.fused_lstm

    def counts():  # (forward and gradient, forward alone)
        return (_row_contracted_matmuls(run, cell, inputs, state),
                _row_contracted_matmuls(run, cell, inputs, state, gradients=False))
    _contract_rows(monkeypatch)
    both, forward = counts()
    _contract_rows(monkeypatch, "own_forward")
    assert counts() == (both, forward)
    _contract_rows(monkeypatch, "copying")
    assert counts() == (both + 1, forward + 1)  # the forward body's
    _contract_rows(monkeypatch, "backward")
    assert counts() == (both + 1, forward)  # the backward body's


@pytest.mark.parametrize("run", [fused_lstm.fused_lstm, _unrolled])
def test_fused_lstm_outside_xla_takes_the_weights_as_they_are(run, monkeypatch):
    # TensorFlow's own MatMul runs the row-contracted form at half the speed.
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    _contract_rows(monkeypatch)
    as_they_are = _row_contracted_matmuls(run, cell, inputs, state, jit=False)
    _contract_rows(monkeypatch, "copying", "backward", "own_forward")
    assert _row_contracted_matmuls(run, cell, inputs, state, jit=False) == as_they_are
    # Under XLA the same thresholds contract both loops' products.
    per_loop = STEPS if run is _unrolled else 1
    assert _row_contracted_matmuls(run, cell, inputs, state) == as_they_are + 2 * per_loop


def test_a_gradient_traced_apart_from_its_compiled_forward_keeps_the_xla_form(monkeypatch):
    # The tape outside a compiled forward: TensorFlow traces the backward function without
    # XLA's context, and XLA compiles it; its loop keeps the form the forward chose.
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)

    def count():  # traced afresh: a trace keeps the thresholds it saw
        forward = tf.function(lambda x, s: fused_lstm.fused_lstm(cell, x, s), jit_compile=True)
        return _row_contracted_matmuls(lambda cell, x, s: forward(x, s), cell, inputs, state,
                                       jit=False)
    _contract_rows(monkeypatch)
    as_they_are = count()
    _contract_rows(monkeypatch, "backward")
    assert count() == as_they_are + 1  # the backward body's
    _contract_rows(monkeypatch, "copying", "backward")
    assert count() == as_they_are + 2


def test_loops_compiled_on_their_own_contract_rows_by_their_thresholds(monkeypatch):
    # compile_loops (bfloat16 training): the forward loop follows `own_forward`, the
    # backward loop `backward`.
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)

    def counts():  # (forward and gradient, forward alone)
        # Fresh compiled loops: the module's own keep their traces across thresholds.
        monkeypatch.setattr(fused_lstm, "_compiled_forward",
                            fused_lstm._compiled(fused_lstm._lstm_forward))
        monkeypatch.setattr(fused_lstm, "_compiled_backward",
                            fused_lstm._compiled(fused_lstm._lstm_backward))
        return tuple(_row_contracted_matmuls(  # the step around them is not compiled
            lambda cell, x, s: fused_lstm.fused_lstm(cell, x, s, compile_loops=True),
            cell, inputs, state, jit=False, gradients=gradients) for gradients in (True, False))
    _contract_rows(monkeypatch)
    both, forward = counts()
    _contract_rows(monkeypatch, "copying")
    assert counts() == (both, forward)
    _contract_rows(monkeypatch, "own_forward")
    assert counts() == (both + 1, forward + 1)
    _contract_rows(monkeypatch, "backward")
    assert counts() == (both + 1, forward)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("recurrent", [False, True])
def test_fused_lstm_with_the_backward_loop_transposed_matches_dynamic_rnn(recurrent, mode,
                                                                          monkeypatch):
    # Large weights' backward while loop under XLA on AVX-512, here forced (and, eager, run
    # on TensorFlow's kernels), with the recurrent mask transposed along.
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    recurrent_mask, _ = _masks(6, weights=False) if recurrent else (None, None)

    def fused(cell, x, s):
        return fused_lstm.fused_lstm(cell, x, s, recurrent_mask=recurrent_mask)
    monkeypatch.setattr(fused_lstm, "_compiled_by_xla", lambda: True)
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER)
    plain = _transposes(fused, cell, inputs, state, jit=False)
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER._replace(transposed_backward=0))
    # The loop's four inputs, its two states in and out and dgates flip: 9 transposes (10 with
    # the mask) in place of W_h^T's one.
    assert _transposes(fused, cell, inputs, state, jit=False) == plain + 8 + recurrent
    reference = _masked_reference(recurrent_mask, None)
    _assert_close(maybe_function(lambda x, s: fused(cell, x, s), mode)(inputs, state),
                  reference(cell, inputs, state), rtol=1e-10, atol=1e-10)
    grads = maybe_function(_gradients, mode)(fused, cell, inputs, state)
    _assert_close(grads, _gradients(reference, cell, inputs, state), rtol=1e-10, atol=1e-10)


def test_the_transposed_backward_loop_with_unknown_num_steps_under_xla(monkeypatch):
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER._replace(transposed_backward=0))
    test_fused_lstm_with_unknown_num_steps_under_xla(fused_lstm.fused_lstm)


def test_only_a_backward_while_loop_under_xla_is_transposed(monkeypatch):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)

    def own_loops(cell, x, s):  # bfloat16 training's loops, compiled on their own
        return fused_lstm.fused_lstm(cell, x, s, compile_loops=True)

    def counts():
        # Fresh compiled loops: the module's own keep their traces across rules.
        monkeypatch.setattr(fused_lstm, "_compiled_backward",
                            fused_lstm._compiled(fused_lstm._lstm_backward))
        return (_transposes(fused_lstm.fused_lstm, cell, inputs, state),
                _transposes(fused_lstm.fused_lstm, cell, inputs, state, jit=False),
                _transposes(own_loops, cell, inputs, state, jit=False),
                _transposes(_unrolled, cell, inputs, state),
                _transposes(fused_lstm.fused_lstm, cell, inputs, state, gradients=False))
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER)
    never = counts()
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER._replace(transposed_backward=0))
    compiled, outside_xla, own, unrolled, forward = counts()
    assert (compiled, own) == (never[0] + 8, never[2] + 8)  # 9 in place of W_h^T's one
    assert (outside_xla, unrolled, forward) == never[1:2] + never[3:]


def test_the_cpu_flags_choose_where_rows_are_contracted():
    assert loop_forms.kind(("avx2", "avx512f", "avx512bw")) == "avx512f"
    assert loop_forms.kind(("avx2", "fma")) == "no avx512f"
    assert loop_forms.kind(()) == "no avx512f"
    # A GPU takes the weights as they are in every loop, whatever the CPU.
    assert loop_forms.kind(("avx2", "avx512f"), gpu=True) == "gpu"
    # XLA told to emit no AVX-512 code: the rule of a CPU without it.
    avx512 = ("avx2", "avx512f")
    assert loop_forms.kind(avx512, xla_flags="--xla_cpu_max_isa=AVX2") == "no avx512f"
    assert loop_forms.kind(avx512, xla_flags="--foo=1 --xla_cpu_max_isa=avx") == "no avx512f"
    assert loop_forms.kind(avx512, xla_flags="--xla_cpu_max_isa=AVX512_BF16") == "avx512f"
    assert loop_forms.kind(avx512, xla_flags="--xla_cpu_max_isa=AVX2 "
                                             "--xla_cpu_max_isa=AVX512") == "avx512f"
    assert loop_forms.LOOP_FORMS["gpu"] == _NEVER
    # With AVX-512 every loop takes the weights as they are, but large's 36 MB of W_h go
    # into a transposed backward loop and medium's 6.8 MB do not; without AVX-512, large's
    # have their rows contracted in every loop and no loop is transposed.
    avx512 = loop_forms.LOOP_FORMS["avx512f"]
    assert avx512._replace(transposed_backward=None) == _NEVER
    assert 650 * 2600 * 4 < avx512.transposed_backward <= 1500 * 6000 * 4
    no_avx512 = loop_forms.LOOP_FORMS["no avx512f"]
    assert all(0 < size <= 1500 * 6000 * 4 for size in no_avx512[:3])
    assert no_avx512.transposed_backward is None


def test_per_step_forms_name_each_loops_form_for_the_hidden_size(monkeypatch):
    monkeypatch.setattr(loop_forms, "KIND", "no avx512f")
    monkeypatch.setattr(loop_forms, "CHOSEN",
                        loop_forms.LOOP_FORMS["no avx512f"])
    assert loop_forms.per_step_forms(200) == (
        "forward as they are, backward as they are, evaluation as they are (no avx512f)")
    assert loop_forms.per_step_forms(650) == (
        "forward as they are, backward rows contracted, evaluation as they are (no avx512f)")
    assert loop_forms.per_step_forms(1500) == (
        "forward rows contracted, backward rows contracted, evaluation rows contracted "
        "(no avx512f)")
    assert loop_forms.per_step_forms(650, own_loops=True) == (  # bfloat16 training
        "forward rows contracted, backward rows contracted, evaluation as they are "
        "(no avx512f)")
    monkeypatch.setattr(loop_forms, "KIND", "avx512f")
    monkeypatch.setattr(loop_forms, "CHOSEN", loop_forms.LOOP_FORMS["avx512f"])
    assert loop_forms.per_step_forms(650) == (
        "forward as they are, backward as they are, evaluation as they are (avx512f)")
    assert loop_forms.per_step_forms(1500) == (
        "forward as they are, backward transposed, evaluation as they are (avx512f)")
    assert loop_forms.per_step_forms(1500, own_loops=True) == (  # bfloat16 training
        "forward as they are, backward transposed, evaluation as they are (avx512f)")
    monkeypatch.setattr(loop_forms, "KIND", "gpu")
    monkeypatch.setattr(loop_forms, "CHOSEN", loop_forms.LOOP_FORMS["gpu"])
    assert loop_forms.per_step_forms(1500, own_loops=True) == (
        "forward as they are, backward as they are, evaluation as they are (gpu)")
    monkeypatch.setattr(loop_forms, "CHOSEN", _NEVER._replace(own_forward=0))
    assert loop_forms.per_step_forms(1500, own_loops=True).startswith("forward rows contracted,")
    assert loop_forms.per_step_forms(1500).startswith("forward as they are,")


def _partial_loss_gradients(run, cell, inputs, state, part):
    """Gradients of a loss on only one of outputs / final c / final h."""
    with tf.GradientTape() as tape:
        tape.watch([inputs, state])
        outputs, final = run(cell, inputs, state)
        loss = tf.reduce_sum(
            {"outputs": outputs, "c": final.c, "h": final.h}[part] ** 2)
    return tape.gradient(loss, [cell.kernel, cell.bias, inputs, state])


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("part", ["outputs", "c", "h"])
def test_fused_lstm_gradients_with_unused_results(part, mode):
    # The unused results get no upstream gradient (None or zeros).
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    grads = maybe_function(_partial_loss_gradients, mode)
    got = grads(fused_lstm.fused_lstm, cell, inputs, state, part)
    want = _partial_loss_gradients(_reference, cell, inputs, state, part)
    assert all(g is not None for g in tf.nest.flatten(got))
    _assert_close(got, want, rtol=1e-10, atol=1e-10)


def _weighted_loss_gradients(run, cell, inputs, state, weights):
    """Like `_gradients`, with the loss weights given (for unknown shapes)."""
    with tf.GradientTape() as tape:
        tape.watch([inputs, state])
        outputs, final = run(cell, inputs, state)
        loss = (tf.reduce_sum(outputs * weights[0])
                + tf.reduce_sum(final.c * weights[1])
                + tf.reduce_sum(final.h * weights[2]))
    return tape.gradient(loss, [cell.kernel, cell.bias, inputs, state])


@pytest.mark.parametrize("run", [fused_lstm.fused_lstm, _unrolled])
def test_fused_lstm_with_unknown_num_steps_under_xla(run):
    # unroll=True falls back to the while_loop: T is unknown when traced.
    cell = _lstm(dtype=tf.float64)
    state_spec = tf.TensorSpec([BATCH, UNITS], tf.float64)
    grads = tf.function(
        lambda x, s, w: _weighted_loss_gradients(run, cell, x, s, w),
        jit_compile=True,
        input_signature=[tf.TensorSpec([None, BATCH, INPUT], tf.float64),
                         cells.LSTMStateTuple(state_spec, state_spec),
                         (tf.TensorSpec([None, BATCH, UNITS], tf.float64),
                          state_spec, state_spec)])
    for steps in (STEPS, 2):
        inputs, state = _sequence_and_state(tf.float64, steps=steps)
        weights = (_random([steps, BATCH, UNITS], 5, dtype=tf.float64),
                   _random([BATCH, UNITS], 6, dtype=tf.float64),
                   _random([BATCH, UNITS], 7, dtype=tf.float64))
        want = _weighted_loss_gradients(_reference, cell, inputs, state,
                                        weights)
        _assert_close(grads(inputs, state, weights), want,
                      rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("run", [fused_lstm.fused_lstm, _unrolled])
def test_fused_lstm_zero_steps_returns_initial_state(run):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64, steps=0)
    with tf.GradientTape() as tape:
        tape.watch(state)
        outputs, final = run(cell, inputs, state)
        loss = tf.reduce_sum(final.c) + 2 * tf.reduce_sum(final.h)
    assert outputs.shape.as_list() == [0, BATCH, UNITS]
    _assert_close(final, state)
    d_c, d_h = tape.gradient(loss, state)
    np.testing.assert_array_equal(d_c, np.ones([BATCH, UNITS]))
    np.testing.assert_array_equal(d_h, 2 * np.ones([BATCH, UNITS]))


def test_fused_lstm_trains_the_cell_variables():
    # A tape watching only the variables (as a training step does) gets both
    # kernel and bias gradients, and they are the cell's own variables.
    cell = _lstm()
    inputs, state = _sequence_and_state()
    with tf.GradientTape() as tape:
        outputs, _ = fused_lstm.fused_lstm(cell, inputs, state)
        loss = tf.reduce_sum(outputs)
    variables = cell.trainable_variables
    assert {id(v) for v in variables} == {id(cell.kernel), id(cell.bias)}
    assert all(g is not None for g in tape.gradient(loss, variables))


def test_fused_lstm_rejects_non_tanh_cells():
    inputs, state = _sequence_and_state()
    with pytest.raises(ValueError, match="only tanh"):
        fused_lstm.fused_lstm(_lstm(activation=tf.nn.relu), inputs, state)


def _hand_built_example():
    """input_size 1, num_units 1: each gate's weights are distinct numbers."""
    #                 i    j    f    o
    kernel = np.array([[1., 2., 3., 4.],      # x row
                       [5., 6., 7., 8.]])     # h row
    bias = np.array([10., 20., 30., 40.])
    # cuDNN: W_i W_f W_c W_o, R_i R_f R_c R_o, bW (forget_bias in f), bR.
    params = np.array([1., 3., 2., 4.,
                       5., 7., 6., 8.,
                       0., .5, 0., 0.,
                       10., 30., 20., 40.])
    return kernel, bias, params


def test_canonical_to_cudnn_reorders_hand_built_gates():
    kernel, bias, params = _hand_built_example()
    got = kernels.canonical_to_cudnn(kernel, bias, 1, 1, forget_bias=0.5)
    np.testing.assert_array_equal(got, params)
    back_kernel, back_bias = kernels.cudnn_to_canonical(params, 1, 1, 0.5)
    np.testing.assert_array_equal(back_kernel, kernel)
    np.testing.assert_array_equal(back_bias, bias)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, 0.3])
def test_cudnn_conversion_round_trips_exactly(forget_bias):
    kernel = _random([INPUT + UNITS, 4 * UNITS], 3)
    bias = _random([4 * UNITS], 4, scale=1e-6)  # tiny: (b + fb) - fb != b
    params = kernels.canonical_to_cudnn(kernel, bias, INPUT, UNITS, forget_bias)
    assert params.shape == [4 * UNITS * (INPUT + UNITS) + 8 * UNITS]
    back_kernel, back_bias = kernels.cudnn_to_canonical(
        params, INPUT, UNITS, forget_bias)
    np.testing.assert_array_equal(back_kernel, kernel)
    np.testing.assert_array_equal(back_bias, bias)


def _np_cudnn_lstm_step(params, input_size, units, x, c, h):
    """One LSTM step read straight from cuDNN's documented params layout."""
    sizes = [units * input_size] * 4 + [units * units] * 4 + [units] * 8
    pieces = np.split(params, np.cumsum(sizes)[:-1])
    w = [p.reshape(units, input_size) for p in pieces[0:4]]
    r = [p.reshape(units, units) for p in pieces[4:8]]
    gate = [x @ w[k].T + h @ r[k].T + pieces[8 + k] + pieces[12 + k]
            for k in range(4)]
    i, f, cand, o = (sigmoid(gate[0]), sigmoid(gate[1]), np.tanh(gate[2]),
                     sigmoid(gate[3]))
    new_c = f * c + i * cand
    return new_c, o * np.tanh(new_c)


def test_canonical_to_cudnn_params_compute_the_lstm_cell_step():
    cell = _lstm(forget_bias=0.7, dtype=tf.float64)
    x = _random([BATCH, INPUT], 0, dtype=tf.float64)
    state = cells.LSTMStateTuple(_random([BATCH, UNITS], 1, dtype=tf.float64),
                                 _random([BATCH, UNITS], 2, dtype=tf.float64))
    params = kernels.canonical_to_cudnn(cell.kernel, cell.bias, INPUT, UNITS,
                                      cell.forget_bias)
    want_c, want_h = _np_cudnn_lstm_step(params.numpy(), INPUT, UNITS,
                                         x.numpy(), *map(np.asarray, state))
    _, got = cell(x, state)
    np.testing.assert_allclose(got.c, want_c, rtol=1e-12)
    np.testing.assert_allclose(got.h, want_h, rtol=1e-12)


def test_cudnn_to_canonical_keeps_both_cudnn_biases():
    # Params as cuDNN might have trained them: both bias vectors nonzero.
    size = 4 * UNITS * (INPUT + UNITS) + 8 * UNITS
    params = _random([size], 8, scale=0.5, dtype=tf.float64).numpy()
    kernel, bias = kernels.cudnn_to_canonical(params, INPUT, UNITS, 1.0)
    cell = cells.LSTMCell(
        UNITS, INPUT, forget_bias=1.0, dtype=tf.float64,
        kernel_initializer=lambda shape, dtype: kernel,
        bias_initializer=lambda shape, dtype: bias)
    x = _random([BATCH, INPUT], 0, dtype=tf.float64)
    c, h = (_random([BATCH, UNITS], s, dtype=tf.float64) for s in (1, 2))
    _, got = cell(x, cells.LSTMStateTuple(c, h))
    want_c, want_h = _np_cudnn_lstm_step(params, INPUT, UNITS, x.numpy(),
                                         c.numpy(), h.numpy())
    np.testing.assert_allclose(got.c, want_c, rtol=1e-12)
    np.testing.assert_allclose(got.h, want_h, rtol=1e-12)


@pytest.mark.skipif(kernels.gpu_available(), reason="this machine has a GPU")
def test_cudnn_lstm_raises_without_gpu():
    inputs, state = _sequence_and_state()
    with pytest.raises(kernels.NoGPUError, match="needs a GPU"):
        kernels.cudnn_lstm(_lstm(), inputs, state)
    assert issubclass(kernels.NoGPUError, errors.UserError)


@pytest.mark.skipif(kernels.gpu_available(), reason="this machine has a GPU")
def test_kernels_resolve_without_gpu():
    assert kernels.resolve("auto") == "fused"
    for name in kernels.NAMES:
        if kernels.KERNELS[name].needs_gpu:
            with pytest.raises(kernels.NoGPUError, match=f"rnn_mode {name} needs a GPU"):
                kernels.resolve(name)
        else:
            assert kernels.resolve(name) == name
    with pytest.raises(ValueError, match="unknown rnn_mode 'lstm'"):
        kernels.resolve("lstm")


def test_kernels_jit_compile_follows_the_table():
    for name, kernel in kernels.KERNELS.items():
        assert kernels.jit_compile(name) == kernel.default_jit
        assert kernels.jit_compile(name, False) is False
        if kernel.xla:
            assert kernels.jit_compile(name, True) is True
        else:
            with pytest.raises(kernels.XLAError, match=f"--rnn_mode={name} cannot run under --xla"):
                kernels.jit_compile(name, True)
    # Our own LSTMs compile; the library kernels have no XLA version.
    assert {n for n, k in kernels.KERNELS.items() if k.xla} == {"basic", "fused"}


@pytest.mark.parametrize("name", [n for n in kernels.NAMES if not kernels.KERNELS[n].needs_gpu])
def test_kernels_table_runs_every_cpu_kernel_like_dynamic_rnn(name):
    cell = _lstm()
    inputs, state = _sequence_and_state()
    for training in (True, False):
        _assert_close(kernels.KERNELS[name].run(cell, inputs, state, training),
                      _reference(cell, inputs, state), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not kernels.gpu_available(), reason="needs a GPU")
def test_cudnn_lstm_matches_dynamic_rnn_values_and_gradients():
    cell = _lstm()
    inputs, state = _sequence_and_state()
    _assert_close(kernels.cudnn_lstm(cell, inputs, state),
                  _reference(cell, inputs, state), rtol=1e-4, atol=1e-4)
    _assert_close(_gradients(kernels.cudnn_lstm, cell, inputs, state),
                  _gradients(_reference, cell, inputs, state),
                  rtol=1e-3, atol=1e-3)
    assert kernels.resolve("auto") == "cudnn"


def _masks(seed, weight_shape=(UNITS, 4 * UNITS), dtype=tf.float64, recurrent=True,
           weights=True):
    """Keep masks as the model hands them over: 0 or 1/keep."""
    rng = np.random.default_rng(seed)
    recurrent_mask = (rng.random([BATCH, UNITS]) < 0.6) / 0.6
    weight_mask = (rng.random(weight_shape) < 0.5) / 0.5
    return (tf.constant(recurrent_mask, dtype) if recurrent else None,
            tf.constant(weight_mask, dtype) if weights else None)


def _masked_reference(recurrent_mask, weight_mask):
    def run(cell, inputs, state):
        masked = cells.MaskedRecurrence(cell, recurrent_mask, weight_mask)
        return dynamic_rnn(masked, inputs, state, time_major=True)
    return run


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
@pytest.mark.parametrize("unroll", [False, True])
@pytest.mark.parametrize("recurrent, weights", [(True, False), (False, True), (True, True)])
def test_fused_lstm_with_masks_matches_dynamic_rnn_values_and_gradients(recurrent, weights,
                                                                       unroll, mode):
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    recurrent_mask, weight_mask = _masks(3, recurrent=recurrent, weights=weights)

    def fused(cell, x, s):
        return fused_lstm.fused_lstm(cell, x, s, unroll=unroll, recurrent_mask=recurrent_mask,
                                     weight_mask=weight_mask)
    reference = _masked_reference(recurrent_mask, weight_mask)
    _assert_close(maybe_function(lambda x, s: fused(cell, x, s), mode)(inputs, state),
                  reference(cell, inputs, state), rtol=1e-10, atol=1e-10)
    got = maybe_function(_gradients, mode)(fused, cell, inputs, state)
    assert all(g is not None for g in tf.nest.flatten(got))
    _assert_close(got, _gradients(reference, cell, inputs, state), rtol=1e-10, atol=1e-10)


def test_masks_change_the_lstm_and_ones_do_not():
    cell = _lstm(dtype=tf.float64)
    inputs, state = _sequence_and_state(tf.float64)
    ones = tf.ones([BATCH, UNITS], tf.float64), tf.ones([UNITS, 4 * UNITS], tf.float64)
    plain = _reference(cell, inputs, state)
    _assert_close(fused_lstm.fused_lstm(cell, inputs, state, recurrent_mask=ones[0],
                                        weight_mask=ones[1]), plain, rtol=1e-12, atol=1e-12)
    recurrent_mask, weight_mask = _masks(4)
    for masks in ({"recurrent_mask": recurrent_mask}, {"weight_mask": weight_mask}):
        outputs, _ = fused_lstm.fused_lstm(cell, inputs, state, **masks)
        assert not np.allclose(outputs, plain[0])


@pytest.mark.parametrize("name", ["block"])
def test_library_kernels_take_the_weight_mask_but_not_the_recurrent_one(name):
    cell = _lstm()
    inputs, state = _sequence_and_state()
    recurrent_mask, weight_mask = _masks(5, dtype=tf.float32)
    run = kernels.KERNELS[name].run
    _assert_close(run(cell, inputs, state, True, weight_mask=weight_mask),
                  _masked_reference(None, weight_mask)(cell, inputs, state), rtol=1e-5, atol=1e-5)
    got = _gradients(lambda c, x, s: run(c, x, s, True, weight_mask=weight_mask), cell, inputs,
                     state)
    _assert_close(got, _gradients(_masked_reference(None, weight_mask), cell, inputs, state),
                  rtol=1e-4, atol=1e-4)
    with pytest.raises(kernels.UnsupportedError, match="cannot mask the recurrent h"):
        run(cell, inputs, state, True, recurrent_mask=recurrent_mask)


@pytest.mark.skipif(kernels.gpu_available(), reason="this machine has a GPU")
def test_cudnn_is_refused_on_a_rocm_build_and_auto_passes_it_by(monkeypatch):
    # MIOpen orders an LSTM's gates i, f, o, c: cuDNN's layout would swap two of them silently.
    monkeypatch.setattr(kernels, "gpu_available", lambda: True)
    monkeypatch.setattr(tf.sysconfig, "get_build_info", lambda: {"is_rocm_build": True})
    assert kernels.resolve(kernels.AUTO) == "fused"
    with pytest.raises(kernels.NoGPUError, match=r"^rnn_mode cudnn lays out cuDNN's gate order, "
                                                 r"and this TensorFlow is a ROCm build"):
        kernels.resolve("cudnn")
    monkeypatch.setattr(tf.sysconfig, "get_build_info", lambda: {"is_cuda_build": True})
    assert kernels.resolve(kernels.AUTO) == "cudnn"


def test_kernels_resolve_auto_by_cell_and_recurrent_mask():
    assert kernels.resolve("auto", cell="lstm") == "fused"
    assert kernels.resolve("auto", cell="lstm", recurrent_mask=True) == "fused"
    assert kernels.resolve("auto", cell="gru") == "basic"
    assert kernels.resolve("auto", cell="rnn", recurrent_mask=True) == "basic"
    assert kernels.resolve("basic", cell="gru") == "basic"
    assert {n for n, k in kernels.KERNELS.items() if "gru" in k.cells} == {"basic"}


@pytest.mark.parametrize("name, kwargs, message", [
    ("fused", {"cell": "gru"}, "rnn_mode fused runs only lstm cells, not cell=gru; use rnn_mode "
                               "basic"),
    ("block", {"cell": "rnn"}, "rnn_mode block runs only lstm cells, not cell=rnn"),
    ("cudnn", {"cell": "gru"}, "rnn_mode cudnn runs only lstm cells, not cell=gru"),
    ("block", {"recurrent_mask": True}, r"rnn_mode block cannot drop the recurrent h \("
                                        r"recurrent_keep_prob < 1\); use rnn_mode fused"),
])
def test_kernels_resolve_refuses_what_a_kernel_cannot_run_in_one_line(name, kwargs, message):
    with pytest.raises(kernels.UnsupportedError, match=message) as info:
        kernels.resolve(name, **kwargs)
    assert "\n" not in str(info.value)
    assert issubclass(kernels.UnsupportedError, errors.UserError)


@pytest.mark.parametrize("kind", ["gru", "rnn"])
def test_basic_kernel_runs_gru_and_rnn_cells_with_masks(kind):
    make = {"gru": cells.GRUCell, "rnn": cells.BasicRNNCell}[kind]
    cell = make(UNITS, INPUT, kernel_initializer=numpy_initializer(1), dtype=tf.float64)
    inputs, _ = _sequence_and_state(tf.float64)
    state = cell.zero_state(BATCH)
    recurrent_mask, weight_mask = _masks(6, weight_shape=cell.recurrent_shape)
    got = kernels.KERNELS["basic"].run(cell, inputs, state, True, recurrent_mask, weight_mask)
    _assert_close(got, _masked_reference(recurrent_mask, weight_mask)(cell, inputs, state))
