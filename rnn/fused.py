"""Fused LSTM paths over LSTMCell's variables: BlockLSTM, fused_lstm, cuDNN."""

import tensorflow as tf

from .cells import LSTMStateTuple


class NoGPUError(RuntimeError):
    """Raised when the cuDNN path is asked for on a machine without a GPU."""


def gpu_available():
    """True when TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def available_modes():
    """Names of the LSTM execution modes usable on this machine.

    Returns:
      ("basic", "block") plus "cudnn" when a GPU is visible.
    """
    modes = ("basic", "block")
    return modes + ("cudnn",) if gpu_available() else modes


def _check_tanh(cell, path):
    # The fused kernels and fused_lstm's backward pass hard-wire tanh; another
    # activation would silently compute another function than LSTMCell.
    if cell.activation is not tf.tanh and cell.activation is not tf.math.tanh:
        raise ValueError(f"{path} supports only tanh activation, got "
                         f"{cell.activation!r}")


def _check_fusable(cell, path):
    _check_tanh(cell, path)
    if cell.dtype not in (tf.float32, tf.float16):
        raise ValueError(f"{path} supports float32/float16 cells, got "
                         f"{cell.dtype.name}")


def _final_state(outputs_c, outputs_h, initial_state):
    """Last step's (c, h); the initial state when there are no steps."""
    num_steps = outputs_h.shape[0]
    if num_steps is not None:
        return (LSTMStateTuple(outputs_c[-1], outputs_h[-1]) if num_steps
                else initial_state)
    has_steps = tf.shape(outputs_h)[0] > 0
    c = tf.cond(has_steps, lambda: outputs_c[-1], lambda: initial_state.c)
    h = tf.cond(has_steps, lambda: outputs_h[-1], lambda: initial_state.h)
    return LSTMStateTuple(c, h)


def block_lstm(cell, inputs, initial_state):
    """Runs an LSTMCell over a whole sequence in the fused BlockLSTM kernel.

    Uses `tf.raw_ops.BlockLSTM` (V1): its gate layout is i, j(=ci), f, o and it
    adds `forget_bias` itself, which is exactly LSTMCell's layout, so the
    cell's `kernel` and `bias` go in as they are (no copy, no reordering).
    BlockLSTMV2 would need the gates reordered to i, f, j, o and forget_bias
    folded into the bias on every call.

    Args:
      cell: an LSTMCell with tanh activation.
      inputs: float32 `[num_steps, batch, input_size]`, time-major.
      initial_state: LSTMStateTuple of float32 `[batch, num_units]`.

    Returns:
      (outputs `[num_steps, batch, num_units]` time-major, LSTMStateTuple).

    Raises:
      ValueError: if the cell's activation is not tanh.
    """
    _check_fusable(cell, "block_lstm")
    inputs = tf.convert_to_tensor(inputs)
    no_peephole = tf.zeros([cell.num_units], dtype=inputs.dtype)
    result = tf.raw_ops.BlockLSTM(
        seq_len_max=tf.cast(tf.shape(inputs)[0], tf.int64),
        x=inputs, cs_prev=initial_state.c, h_prev=initial_state.h,
        w=cell.kernel, wci=no_peephole, wcf=no_peephole, wco=no_peephole,
        b=cell.bias, forget_bias=cell.forget_bias,
        cell_clip=-1.0,  # <= 0 disables clipping; LSTMCell never clips.
        use_peephole=False)
    outputs = result.h  # [num_steps, batch, num_units], time-major
    return outputs, _final_state(result.cs, outputs, initial_state)


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


# Per-step recurrent weights of at least this many bytes are multiplied with
# their rows contracted (see _per_step_matmul): in while loops (training) from
# H=650 (6.8 MB); in unrolled loops (validation, test) only from H=1500 (36 MB,
# past the 32 MB cache), as at H=650 they measured slower there.
_ROW_CONTRACTED_BYTES = 2 << 20
_ROW_CONTRACTED_BYTES_UNROLLED = 16 << 20


def _per_step_matmul(w, unroll):
    """x -> x @ w for a loop that multiplies a few rows by the same `w` every step.

    Small weights go in as they are: XLA hands the product to YNNPACK. Larger
    ones go in transposed with their rows contracted (`x @ (w^T)^T`), which
    XLA hands to Eigen: YNNPACK repacks the weights on every call, and once
    they outgrow the cache that doubles the memory traffic of a step.
    Measured under XLA, batch 20 (AVX2 host): H=1500 forward 4.2 -> 2.8 ms and
    backward 5.9 -> 2.9 ms per step; H=650 medium training step 386-394 ->
    378-382 ms, but its unrolled validation step 130 -> 150 ms; H=200 0.07 ms
    as is against 0.11 transposed.
    """
    min_bytes = _ROW_CONTRACTED_BYTES_UNROLLED if unroll else _ROW_CONTRACTED_BYTES
    if w.shape.num_elements() * w.dtype.size < min_bytes:
        return lambda x: tf.matmul(x, w)
    w_t = tf.transpose(w)  # [n, k]
    if unroll:
        # Unrolled, XLA folds a plain transpose back into x @ w; a gather of
        # all the rows is a copy it cannot see through. (A while loop's body
        # gets w_t from outside, so there the transpose stays.)
        w_t = tf.gather(w_t, tf.range(w.shape[1]))
    return lambda x: tf.matmul(x, w_t, transpose_b=True)


def _lstm_forward(projected, c0, h0, w_h, forget_bias, unroll):
    """The recurrence given all steps' input projections.

    Args:
      projected: `[T, batch, 4H]` = inputs @ W_x + bias, time-major.
      c0, h0: `[batch, H]` initial state.
      w_h: `[H, 4H]` recurrent weights.
      forget_bias: Python float added to f, as LSTMCell does.
      unroll: Python loop over a static T instead of a tf.while_loop.

    Returns:
      (outputs h_1..h_T `[T, batch, H]`, cell states c_1..c_T `[T, batch, H]`,
      activations [sigmoid(i), tanh(j), sigmoid(f + fb), sigmoid(o)]
      `[T, batch, 4H]`, c_T, h_T); c_T, h_T are c0, h0 when T == 0.
    """
    batch, units = h0.shape[0], w_h.shape[0]
    times_w_h = _per_step_matmul(w_h, unroll)

    def step(state, projected_t):
        c, h = state
        gates = projected_t + times_w_h(h)
        i, j, f, o = tf.split(gates, 4, axis=1)
        i, j, f, o = (tf.sigmoid(i), tf.tanh(j), tf.sigmoid(f + forget_bias),
                      tf.sigmoid(o))
        c = f * c + i * j
        h = o * tf.tanh(c)
        return (c, h), (h, c, tf.concat([i, j, f, o], axis=1))

    (c, h), (outputs, cs, acts) = _scan(
        step, [projected], (c0, h0),
        [[batch, units], [batch, units], [batch, 4 * units]], unroll)
    return outputs, cs, acts, c, h


def _lstm_backward(d_outputs, dc, dh, cs, c_prev, acts, w_h, unroll):
    """Reverse loop of the recurrence: only dgates_t @ W_h^T per step.

    Args:
      d_outputs: `[T, batch, H]` upstream gradient of the outputs.
      dc, dh: `[batch, H]` upstream gradients of the final c and h.
      cs, c_prev: `[T, batch, H]` c_1..c_T and c_0..c_{T-1}.
      acts: `[T, batch, 4H]` gate activations saved by `_lstm_forward`.
      w_h: `[H, 4H]`.
      unroll: Python loop over a static T instead of a tf.while_loop.

    Returns:
      (dgates `[T, batch, 4H]` wrt the gate pre-activations, dc_0, dh_0).
    """
    batch, units = dc.shape[0], w_h.shape[0]
    # dgates [batch, 4H] @ W_h^T [4H, H]
    times_w_h_t = _per_step_matmul(tf.transpose(w_h), unroll)

    def step(d_state, d_output, c, c_prev, acts):
        dc, dh = d_state
        i, j, f, o = tf.split(acts, 4, axis=1)
        dh = dh + d_output
        tanh_c = tf.tanh(c)
        dc = dc + dh * o * (1 - tanh_c * tanh_c)
        dgates = tf.concat([dc * j * i * (1 - i),
                            dc * i * (1 - j * j),
                            dc * c_prev * f * (1 - f),
                            dh * tanh_c * o * (1 - o)], axis=1)
        dh = times_w_h_t(dgates)
        return (dc * f, dh), (dgates,)

    (dc, dh), (dgates,) = _scan(
        step, [d_outputs, cs, c_prev, acts], (dc, dh), [[batch, 4 * units]],
        unroll, reverse=True)
    return dgates, dc, dh


def _flat(values):
    """[T, batch, n] -> [T * batch, n]: every step in one GEMM."""
    return tf.reshape(values, [-1, values.shape[-1]])


def fused_lstm(cell, inputs, initial_state, unroll=False):
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
    until run time (XLA then compiles per T).

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

    Returns:
      (outputs `[num_steps, batch, num_units]` time-major,
      LSTMStateTuple(c_T, h_T)); the initial state if num_steps is 0.

    Raises:
      ValueError: if the cell's activation is not tanh.
    """
    _check_tanh(cell, "fused_lstm")
    inputs = tf.convert_to_tensor(inputs, dtype=cell.dtype)
    static_steps, static_batch = inputs.shape[0], inputs.shape[1]
    # Read the variables here, so the gradient reaches them through the
    # reads and custom_gradient sees plain tensors (no `variables` argument).
    kernel = tf.convert_to_tensor(cell.kernel)
    bias = tf.convert_to_tensor(cell.bias)
    outputs, c, h = _fused_lstm(inputs, initial_state.c, initial_state.h,
                                kernel, bias, cell.input_size,
                                cell.forget_bias, unroll)
    outputs.set_shape([static_steps, static_batch, cell.num_units])
    return outputs, LSTMStateTuple(c, h)


def _fused_lstm(inputs, c0, h0, kernel, bias, input_size, forget_bias,
                unroll):
    """custom_gradient core of `fused_lstm`; returns (outputs, c_T, h_T)."""

    @tf.custom_gradient
    def run(inputs, c0, h0, kernel, bias):
        w_x, w_h = kernel[:input_size], kernel[input_size:]
        projected = tf.tensordot(inputs, w_x, axes=1) + bias  # [T, batch, 4H]
        outputs, cs, acts, c, h = _lstm_forward(
            projected, c0, h0, w_h, forget_bias, unroll)

        def grad(d_outputs, dc, dh):
            d_outputs, dc, dh = (
                tf.zeros_like(x) if d is None else d
                for d, x in ((d_outputs, outputs), (dc, c), (dh, h)))
            # c_0..c_{T-1} and h_0..h_{T-1}; concat-then-slice is right for
            # T == 0 too.
            c_prev = tf.concat([c0[None], cs], axis=0)[:-1]
            h_prev = tf.concat([h0[None], outputs], axis=0)[:-1]
            dgates, dc0, dh0 = _lstm_backward(
                d_outputs, dc, dh, cs, c_prev, acts, w_h, unroll)
            flat_dgates = _flat(dgates)  # [T * batch, 4H]
            # [x_t, h_{t-1}] rows, as the kernel's: dW_x and dW_h in one GEMM
            # (measured a little faster than two at H=200 and H=650).
            x_h = _flat(tf.concat([inputs, h_prev], axis=2))
            d_kernel = tf.matmul(x_h, flat_dgates, transpose_a=True)
            d_bias = tf.reduce_sum(flat_dgates, axis=0)
            d_inputs = tf.reshape(
                tf.matmul(flat_dgates, w_x, transpose_b=True),
                tf.shape(inputs))
            return d_inputs, dc0, dh0, d_kernel, d_bias

        return (outputs, c, h), grad

    return run(inputs, c0, h0, kernel, bias)


def _icfo(gates):
    """Canonical [i, j, f, o] blocks -> cuDNN order [i, f, c(=j), o]."""
    i, j, f, o = gates
    return [i, f, j, o]


def _ijfo(gates):
    """cuDNN [i, f, c, o] blocks -> canonical order [i, j(=c), f, o]."""
    i, f, c, o = gates
    return [i, c, f, o]


def _forget_bias_vector(forget_bias, num_units, dtype):
    """[0, forget_bias, 0, 0] per gate block, cuDNN order i, f, c, o."""
    zeros = tf.zeros([num_units], dtype=dtype)
    return [zeros, tf.fill([num_units], tf.constant(forget_bias, dtype)),
            zeros, zeros]


def canonical_to_cudnn(kernel, bias, input_size, num_units, forget_bias):
    """LSTMCell variables -> cuDNN's flat LSTM params (one layer, one direction).

    cuDNN computes gate g = W_g x + R_g h + bW_g + bR_g for g in i, f, c, o.
    The buffer holds W_i, W_f, W_c, W_o (each [H, in], row-major), then R_i..R_o
    (each [H, H]), then bW_i..bW_o, then bR_i..bR_o (each [H]). forget_bias goes
    into bW_f and the canonical bias into bR, so `cudnn_to_canonical` recovers
    both exactly (fb - fb == 0 exactly; (b + fb) - fb need not be b).

    Args:
      kernel: `[input_size + num_units, 4 * num_units]`, gates i, j, f, o.
      bias: `[4 * num_units]`, gates i, j, f, o.
      input_size, num_units: ints.
      forget_bias: float LSTMCell adds to the f gate.

    Returns:
      1-D params of length 4H(in + H) + 8H.
    """
    kernel = tf.convert_to_tensor(kernel)
    w_x = tf.split(kernel[:input_size], 4, axis=1)  # 4 x [in, H]
    w_h = tf.split(kernel[input_size:], 4, axis=1)  # 4 x [H, H]
    # cuDNN multiplies W @ x, so each block is stored transposed: [H, in].
    weights = [tf.reshape(tf.transpose(w), [-1])
               for w in _icfo(w_x) + _icfo(w_h)]
    input_bias = _forget_bias_vector(forget_bias, num_units, kernel.dtype)
    recurrent_bias = _icfo(tf.split(bias, 4))
    return tf.concat(weights + input_bias + recurrent_bias, axis=0)


def cudnn_to_canonical(params, input_size, num_units, forget_bias):
    """cuDNN's flat LSTM params -> (kernel, bias) in LSTMCell's layout.

    The inverse of `canonical_to_cudnn`: bias = (bW - forget_bias) + bR, so
    params from cuDNN-trained models map to the same function, too.

    Args:
      params: 1-D, length 4H(in + H) + 8H (layout in canonical_to_cudnn).
      input_size, num_units: ints.
      forget_bias: float the LSTMCell will add to its f gate.

    Returns:
      (kernel `[input_size + num_units, 4 * num_units]`, bias `[4 * num_units]`),
      gates i, j, f, o.
    """
    params = tf.convert_to_tensor(params)
    hidden = num_units
    sizes = [hidden * input_size] * 4 + [hidden * hidden] * 4 + [hidden] * 8
    pieces = tf.split(params, sizes)
    w_x = [tf.transpose(tf.reshape(p, [hidden, input_size]))
           for p in pieces[0:4]]
    w_h = [tf.transpose(tf.reshape(p, [hidden, hidden])) for p in pieces[4:8]]
    fb = _forget_bias_vector(forget_bias, hidden, params.dtype)
    biases = [(bw - f) + br
              for bw, f, br in zip(pieces[8:12], fb, pieces[12:16])]
    kernel = tf.concat(
        [tf.concat(_ijfo(w_x), axis=1), tf.concat(_ijfo(w_h), axis=1)], axis=0)
    return kernel, tf.concat(_ijfo(biases), axis=0)


def cudnn_lstm(cell, inputs, initial_state):
    """Runs an LSTMCell over a whole sequence in cuDNN (GPU only).

    The cuDNN params are built from `cell.kernel`/`cell.bias` on every call, so
    variables and checkpoints keep LSTMCell's canonical layout and gradients
    flow back to them through the conversion.

    Args:
      cell: an LSTMCell with tanh activation.
      inputs: float32 `[num_steps, batch, input_size]`, time-major.
      initial_state: LSTMStateTuple of float32 `[batch, num_units]`.

    Returns:
      (outputs `[num_steps, batch, num_units]` time-major, LSTMStateTuple).

    Raises:
      NoGPUError: if TensorFlow sees no GPU.
      ValueError: if the cell's activation is not tanh.
    """
    if not gpu_available():
        raise NoGPUError("cuDNN LSTM needs a GPU but TensorFlow sees none; "
                         "use the block or basic mode")
    _check_fusable(cell, "cudnn_lstm")
    params = canonical_to_cudnn(cell.kernel, cell.bias, cell.input_size,
                                cell.num_units, cell.forget_bias)
    # cuDNN states carry a leading layer dimension: [1, batch, H].
    outputs, h, c, _ = tf.raw_ops.CudnnRNN(
        input=inputs, input_h=tf.expand_dims(initial_state.h, 0),
        input_c=tf.expand_dims(initial_state.c, 0), params=params,
        rnn_mode="lstm", input_mode="linear_input",
        direction="unidirectional",
        is_training=True)  # keeps the reserve space the gradient needs
    return outputs, LSTMStateTuple(c[0], h[0])
