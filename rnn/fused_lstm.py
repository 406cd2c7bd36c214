"""Our whole-sequence LSTM over LSTMCell's variables, with a hand-written backward pass."""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util

from . import loop_forms
from .cells import LSTMStateTuple


def require_tanh(cell, path):
    """Raises ValueError unless the cell's activation is tanh.

    The fused kernels and fused_lstm's backward pass hard-wire tanh; another
    activation would silently compute another function than LSTMCell.
    """
    if cell.activation is not tf.tanh and cell.activation is not tf.math.tanh:
        raise ValueError(f"{path} supports only tanh activation, got "
                         f"{cell.activation!r}")


def _unstacked(values):
    """[T, ...] tensor -> TensorArray of its T slices, read in a loop."""
    return tf.TensorArray(values.dtype, size=tf.shape(values)[0],
                          element_shape=values.shape[1:]).unstack(values)


def _scan(step, sequences, carry, out_shapes, unroll, reverse=False):
    """Runs `carry, outs = step(carry, *slices_t)` over the time steps.

    The one loop of both passes of `fused_lstm`, so the unrolled and the
    while_loop versions run the same step function.

    Args:
      step: (carry, *slices_t) -> (carry, outs); outs a tuple of tensors.
      sequences: tensors `[T, ...]`, time-major, read at step t.
      carry: tuple of tensors handed from step to step.
      out_shapes: the shapes of step's outs (element shapes of the loop's
        TensorArrays).
      unroll: a Python loop over t when T is static and > 0 (one graph copy
        of step per t); otherwise a tf.while_loop.
      reverse: run t from T-1 down to 0.

    Returns:
      (last carry, outs of every step stacked `[T, ...]` in time order).
    """
    num_steps = sequences[0].shape[0]
    if unroll and num_steps:
        slices = list(zip(*(tf.unstack(s) for s in sequences)))
        outs = [None] * num_steps
        for t in reversed(range(num_steps)) if reverse else range(num_steps):
            carry, outs[t] = step(carry, *slices[t])
        return carry, tuple(tf.stack(o) for o in zip(*outs))

    num_steps = tf.shape(sequences[0])[0]
    slices_ta = [_unstacked(s) for s in sequences]
    outs_ta = tuple(tf.TensorArray(sequences[0].dtype, size=num_steps,
                                   element_shape=shape)
                    for shape in out_shapes)

    def body(t, carry, outs_ta):
        carry, outs = step(carry, *(ta.read(t) for ta in slices_ta))
        outs_ta = tuple(ta.write(t, o) for ta, o in zip(outs_ta, outs))
        return t + (-1 if reverse else 1), carry, outs_ta

    _, carry, outs_ta = tf.while_loop(
        (lambda t, *_: t >= 0) if reverse else (lambda t, *_: t < num_steps),
        body, (num_steps - 1 if reverse else tf.constant(0), carry, outs_ta),
        maximum_iterations=num_steps)
    return carry, tuple(ta.stack() for ta in outs_ta)


def _compiled_by_xla():
    """Whether the ops being traced now will be compiled by XLA: in a jit_compile function, or in
    a function traced inside one.

    It sees what is traced in XLA's context only: not a gradient function that
    TensorFlow traces apart from a compiled forward (so _fused_lstm asks once,
    for both passes), not a plain tf.function's trace reused by a compiled
    caller (the trace cache does not key on the context), not XLA's
    auto-clustering. There it answers False, which costs speed, never values.
    """
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _per_step_matmul(w, unroll, min_bytes):
    """x -> x @ w for a loop that multiplies a few rows by the same `w` every step.

    min_bytes: the size from which to contract rows under XLA; None outside it or
      never (see loop_forms.LOOP_FORMS).

    Weights under `min_bytes` go in as they are: XLA hands the product to
    YNNPACK. Larger ones go in transposed with their rows contracted
    (`x @ (w^T)^T`), which XLA hands to Eigen: YNNPACK repacks the weights on
    every call, and once they outgrow the cache that doubles the memory
    traffic of a step. Measured under XLA, batch 20 (AVX2 host): H=1500
    forward 4.2 -> 2.8 ms and backward 5.9 -> 2.9 ms per step; H=200 0.07 ms
    as is against 0.11 transposed. On the AVX-512 host the weights as they are
    measured faster at every size (loop_forms.LOOP_FORMS).

    Outside XLA (--xla=0) every size goes in as it is: TensorFlow's own
    MatMul (oneDNN) runs the row-contracted form at half the speed
    (`benchmark.py ceiling`'s tf and tf wT columns, AVX-512 AMD host: medium
    forward 170 / 91 GFLOPS, backward 158 / 79; large 128 / 64, 116 / 56).
    """
    if not loop_forms.takes_form(w.shape.num_elements() * w.dtype.size, min_bytes):
        return lambda x: tf.matmul(x, w)
    w_t = tf.transpose(w)  # [n, k]
    if unroll:
        # Unrolled, XLA folds a plain transpose back into x @ w; a gather of
        # all the rows is a copy it cannot see through. (A while loop's body
        # gets w_t from outside, so there the transpose stays.)
        w_t = tf.gather(w_t, tf.range(w.shape[1]))
    return lambda x: tf.matmul(x, w_t, transpose_b=True)


def _gate_columns(units):
    """Bool [4 * units] masks of the gates' columns [i | j | f | o]: (j's, f's)."""
    block = tf.range(4 * units) // units
    return tf.equal(block, 1), tf.equal(block, 2)


def _activations(units, forget_bias, dtype, one_expression):
    """gates [batch, 4H] -> [sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)].

    one_expression: compute them as one [batch, 4H] select of tanh and sigmoid
    over all columns rather than a slice and an op per gate and a concat. In a
    while loop XLA runs the body's pieces one after another at ~10-20 us each,
    and the one expression is cheaper than four more of them even with twice
    the transcendentals; unrolled, the per-gate ops measured faster (medium
    validation). Under XLA both give the same values bit for bit (x + 0 is x;
    tested); TensorFlow's own kernels may differ in an element's last bit.
    """
    if not one_expression:
        def per_gate(gates):
            i, j, f, o = tf.split(gates, 4, axis=1)
            return tf.concat([tf.sigmoid(i), tf.tanh(j), tf.sigmoid(f + forget_bias),
                              tf.sigmoid(o)], axis=1)
        return per_gate
    is_j, is_f = _gate_columns(units)
    column_bias = tf.where(is_f, tf.constant(forget_bias, dtype), tf.zeros([], dtype))
    return lambda gates: tf.where(is_j, tf.tanh(gates), tf.sigmoid(gates + column_bias))


def _lstm_forward(projected, c0, h0, w_h, forget_bias, unroll, recurrent_mask=None,
                  own_program=False, xla=True):
    """The recurrence given all steps' input projections.

    Args:
      projected: `[T, batch, 4H]` = inputs @ W_x + bias, time-major.
      c0, h0: `[batch, H]` initial state.
      w_h: `[H, 4H]` recurrent weights.
      forget_bias: Python float added to f, as LSTMCell does.
      unroll: Python loop over a static T instead of a tf.while_loop.
      recurrent_mask: optional `[batch, H]`: every step's h_{t-1} is multiplied
        by it before @ W_h (variational recurrent dropout).
      own_program: the loop is compiled as an XLA program of its own
        (compile_loops), not inside a whole compiled step.
      xla: the loop is compiled by XLA (else it runs TensorFlow's kernels).

    Returns:
      (outputs h_1..h_T `[T, batch, H]`, cell states c_1..c_T `[T, batch, H]`,
      activations [sigmoid(i), tanh(j), sigmoid(f + fb), sigmoid(o)]
      `[T, batch, 4H]`, c_T, h_T); c_T, h_T are c0, h0 when T == 0.
    """
    batch, units = h0.shape[0], w_h.shape[0]
    # Row-contracted, h @ W_h needs W_h^T copied (see loop_forms.LOOP_FORMS).
    loop = "own_forward" if own_program and not unroll else "copying"
    times_w_h = _per_step_matmul(w_h, unroll, loop_forms.min_bytes(xla, loop))
    activations = _activations(units, forget_bias, projected.dtype, one_expression=not unroll)

    def step(state, projected_t):
        c, h = state
        gates = projected_t + times_w_h(h if recurrent_mask is None else h * recurrent_mask)
        acts = activations(gates)
        i, j, f, o = tf.split(acts, 4, axis=1)
        c = f * c + i * j
        h = o * tf.tanh(c)
        return (c, h), (h, c, acts)

    (c, h), (outputs, cs, acts) = _scan(
        step, [projected], (c0, h0),
        [[batch, units], [batch, units], [batch, 4 * units]], unroll)
    return outputs, cs, acts, c, h


def _lstm_backward(d_outputs, dc, dh, cs, c_prev, acts, w_h, unroll, recurrent_mask=None,
                   xla=True):
    """Reverse loop of the recurrence: only dgates_t @ W_h^T per step.

    Args:
      d_outputs: `[T, batch, H]` upstream gradient of the outputs.
      dc, dh: `[batch, H]` upstream gradients of the final c and h.
      cs, c_prev: `[T, batch, H]` c_1..c_T and c_0..c_{T-1}.
      acts: `[T, batch, 4H]` gate activations saved by `_lstm_forward`.
      w_h: `[H, 4H]`.
      unroll: Python loop over a static T instead of a tf.while_loop.
      recurrent_mask: optional `[batch, H]`, as in `_lstm_forward`: the
        gradient reaching h_{t-1} through W_h is multiplied by it.
      xla: the loop is compiled by XLA (else it runs TensorFlow's kernels).

    Returns:
      (dgates `[T, batch, 4H]` wrt the gate pre-activations, dc_0, dh_0).
    """
    nbytes = w_h.shape.num_elements() * w_h.dtype.size
    transposed_from = loop_forms.min_bytes(xla, "transposed_backward")
    if not unroll and loop_forms.takes_form(nbytes, transposed_from):
        # The loop in [features, batch] layout: dh^T = W_h @ dgates^T takes both operands as
        # stored, which XLA's dot runs faster for large weights (loop_forms.LOOP_FORMS); the
        # loop's inputs and dgates are transposed once a pass, [T, batch, n] <-> [T, n, batch].
        flip = lambda values: tf.transpose(values, [0, 2, 1])
        mask = None if recurrent_mask is None else tf.transpose(recurrent_mask)
        dgates, dc, dh = _backward_loop(
            flip(d_outputs), tf.transpose(dc), tf.transpose(dh), flip(cs), flip(c_prev),
            flip(acts), lambda dgates: tf.matmul(w_h, dgates), unroll, mask, features=0,
            units=w_h.shape[0])
        return flip(dgates), tf.transpose(dc), tf.transpose(dh)
    # dgates [batch, 4H] @ W_h^T [4H, H]: W_h^T copied once a pass (a while loop's body gets it
    # from outside) or, row-contracted, W_h as stored (unrolled: a gather)
    times_w_h_t = _per_step_matmul(tf.transpose(w_h), unroll,
                                   loop_forms.min_bytes(xla, "copying" if unroll else "backward"))
    return _backward_loop(d_outputs, dc, dh, cs, c_prev, acts, times_w_h_t, unroll,
                          recurrent_mask, features=1, units=w_h.shape[0])


def _backward_loop(d_outputs, dc, dh, cs, c_prev, acts, times_w_h_t, unroll, recurrent_mask,
                   features, units):
    """_lstm_backward's loop with the features on axis `features` of every [batch, n] (1) or
    [n, batch] (0) tensor, and `times_w_h_t` the per-step product dgates -> dh in that layout."""
    batch = dc.shape[1 - features]
    is_j, _ = _gate_columns(units)  # [4H]
    if features == 0:
        is_j = is_j[:, None]  # [4H, 1]

    def step(d_state, d_output, c, c_prev, acts):
        dc, dh = d_state
        i, j, f, o = tf.split(acts, 4, axis=features)
        dh = dh + d_output
        tanh_c = tf.tanh(c)
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        # dgates = [dc j i (1-i) | dc i (1-j^2) | dc c_prev f (1-f) | dh tanh_c o (1-o)],
        # products in that order, as one [batch, 4H] expression (see _lstm_forward).
        upstream = tf.concat([dc, dc, dc, dh], axis=features)
        partner = tf.concat([j, i, c_prev, tanh_c], axis=features)
        own = tf.where(is_j, tf.ones_like(acts), acts)
        slope = tf.where(is_j, 1 - acts * acts, 1 - acts)
        dgates = upstream * partner * own * slope
        dh = times_w_h_t(dgates)
        if recurrent_mask is not None:
            dh = dh * recurrent_mask
        return (dc * f, dh), (dgates,)

    (dc, dh), (dgates,) = _scan(
        step, [d_outputs, cs, c_prev, acts], (dc, dh),
        [[4 * units, batch] if features == 0 else [batch, 4 * units]], unroll, reverse=True)
    return dgates, dc, dh


def _flat(values):
    """[T, batch, n] -> [T * batch, n]: every step in one GEMM."""
    return tf.reshape(values, [-1, values.shape[-1]])


def fused_lstm(cell, inputs, initial_state, unroll=False, recurrent_mask=None,
               weight_mask=None, matmul=None, compile_loops=False):
    """Runs an LSTMCell over a sequence with a hand-written backward pass.

    Computes exactly what `dynamic_rnn` computes with the same `cell.kernel`,
    `cell.bias` and `forget_bias`, but compiles well under XLA: the gradient
    of a plain while_loop accumulates dW_h with one [H, batch] x [batch, 4H]
    matmul per step. Here the loops only do h @ W_h (forward) and
    dgates @ W_h^T (backward); dW_x, dW_h, dbias and d(inputs) are each one
    matmul over all T * batch rows after the backward loop. Forward keeps
    c_t and the gate activations of every step for the backward pass
    (recomputing the gates there instead measured ~20% slower at H=650).

    Works eagerly, in tf.function and with jit_compile=True; T may be unknown
    until run time (XLA then compiles per T), and 0 except under XLA, which
    refuses the loop's slice of an empty input (no caller sends one).

    `unroll=True` replaces both loops by Python loops over t (same math, same
    saved activations, one copy of the step in the graph per t). Under XLA
    the static per-step slices then compile to vectorized code: two layers,
    batch 20, forward only 6.8 -> 2.5 ms at T=20, H=200 and 41 -> 33 ms at
    T=35, H=650; forward and backward 11.1 vs 11.9 ms and 108 vs 126 ms
    (while_loop vs unrolled), so PTBModel unrolls forward-only passes.

    Args:
      cell: an LSTMCell with tanh activation (any float dtype).
      inputs: float `[num_steps, batch, input_size]`, time-major.
      initial_state: LSTMStateTuple of `[batch, num_units]`.
      unroll: unroll both loops over a static num_steps. Ignored (the
        while_loop runs) when num_steps is unknown until run time or 0.
      recurrent_mask: optional float `[batch, num_units]`: h_{t-1} * mask
        goes into the recurrent matmul at every step (variational recurrent
        dropout, scaled by 1/keep already); the carried h is not masked.
      weight_mask: optional float `[num_units, 4 * num_units]`: W_h * mask
        replaces W_h (weight drop). Applied before the custom gradient, so the
        gradient reaches the kernel through the product.
      matmul: optional (a, b, transpose_a, transpose_b) -> a @ b for the
        products over all steps (the input projection, dW and d(inputs)), e.g.
        precision.matmul's bfloat16 ones; tf.matmul when None. The per-step
        recurrent products stay tf.matmul in the cell's dtype.
      compile_loops: compile the two loops with XLA on their own, for a caller
        that is not itself compiled (the bfloat16 products must run outside XLA).

    Returns:
      (outputs `[num_steps, batch, num_units]` time-major,
      LSTMStateTuple(c_T, h_T)); the initial state if num_steps is 0 (in a
      traced function then only with the batch size known when traced:
      TensorFlow cannot stack an empty list of elements of unknown shape).

    Raises:
      ValueError: if the cell's activation is not tanh.
    """
    require_tanh(cell, "fused_lstm")
    inputs = tf.convert_to_tensor(inputs, dtype=cell.dtype)
    static_steps, static_batch = inputs.shape[0], inputs.shape[1]
    # Read the variables here, so the gradient reaches them through the
    # reads and custom_gradient sees plain tensors (no `variables` argument).
    kernel = tf.convert_to_tensor(cell.masked_kernel(weight_mask))
    bias = tf.convert_to_tensor(cell.bias)
    if recurrent_mask is not None:
        recurrent_mask = tf.convert_to_tensor(recurrent_mask, dtype=cell.dtype)
    outputs, c, h = _fused_lstm(inputs, initial_state.c, initial_state.h,
                                kernel, bias, cell.input_size,
                                cell.forget_bias, unroll, recurrent_mask,
                                matmul or tf.matmul, compile_loops)
    outputs.set_shape([static_steps, static_batch, cell.num_units])
    return outputs, LSTMStateTuple(c, h)


def _sequence_product(values, w, matmul):
    """values [T, batch, n] @ w [n, m] -> [T, batch, m], as one [T * batch, n] product."""
    product = matmul(_flat(values), w)
    return tf.reshape(product, tf.concat([tf.shape(values)[:-1], tf.shape(w)[1:]], axis=0))


def _compiled(loop):
    """`loop` as an XLA program of its own (compile_loops), retraced per shape and Python argument.

    Its tensor arguments enter through stop_gradient: a tape that saw the call
    would record it for autodiff, with the loop's TensorLists as outputs, which
    cannot leave XLA. fused_lstm's gradient is its own anyway.
    """
    compiled = tf.function(loop, jit_compile=True)

    def run(*args):
        return compiled(*(tf.stop_gradient(a) if tf.is_tensor(a) else a for a in args))
    return run


_compiled_forward = _compiled(_lstm_forward)
_compiled_backward = _compiled(_lstm_backward)


def _fused_lstm(inputs, c0, h0, kernel, bias, input_size, forget_bias,
                unroll, recurrent_mask=None, matmul=tf.matmul, compile_loops=False):
    """custom_gradient core of `fused_lstm`; returns (outputs, c_T, h_T)."""
    # The mask is an input only when there is one (no gradient: it is not trained).
    masks = () if recurrent_mask is None else (recurrent_mask,)
    forward, backward = ((_compiled_forward, _compiled_backward) if compile_loops
                         else (_lstm_forward, _lstm_backward))

    @tf.custom_gradient
    def run(inputs, c0, h0, kernel, bias, *masks):
        mask = masks[0] if masks else None
        # Asked here, for both passes: the gradient may be traced outside XLA's context.
        xla = compile_loops or _compiled_by_xla()
        w_x, w_h = kernel[:input_size], kernel[input_size:]
        projected = _sequence_product(inputs, w_x, matmul) + bias  # [T, batch, 4H]
        outputs, cs, acts, c, h = forward(
            projected, c0, h0, w_h, forget_bias, unroll, mask, compile_loops, xla)

        def grad(d_outputs, dc, dh):
            d_outputs, dc, dh = (
                tf.zeros_like(x) if d is None else d
                for d, x in ((d_outputs, outputs), (dc, c), (dh, h)))
            # c_0..c_{T-1} and h_0..h_{T-1}; concat-then-slice is right for
            # T == 0 too.
            c_prev = tf.concat([c0[None], cs], axis=0)[:-1]
            h_prev = tf.concat([h0[None], outputs], axis=0)[:-1]
            if mask is not None:
                h_prev = h_prev * mask  # what met W_h: [T, batch, H] * [batch, H]
            dgates, dc0, dh0 = backward(
                d_outputs, dc, dh, cs, c_prev, acts, w_h, unroll, mask, xla)
            flat_dgates = _flat(dgates)  # [T * batch, 4H]
            # [x_t, h_{t-1}] rows, as the kernel's: dW_x and dW_h in one GEMM
            # (measured a little faster than two at H=200 and H=650).
            x_h = _flat(tf.concat([inputs, h_prev], axis=2))
            d_kernel = matmul(x_h, flat_dgates, transpose_a=True)
            d_bias = tf.reduce_sum(flat_dgates, axis=0)
            d_inputs = tf.reshape(
                matmul(flat_dgates, w_x, transpose_b=True),
                tf.shape(inputs))
            return (d_inputs, dc0, dh0, d_kernel, d_bias) + (None,) * len(masks)

        return (outputs, c, h), grad

    return run(inputs, c0, h0, kernel, bias, *masks)
