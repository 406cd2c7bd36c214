"""`dynamic_rnn`: runs any RNNCell over time with tf.while_loop + TensorArray."""

import tensorflow as tf


def _has_projection(cell):
    return hasattr(cell, "project_inputs") and hasattr(cell, "step_projected")


def _step_function(cell, inputs, training):
    """Returns (per-step inputs, step(x_t, state) -> (output, state)).

    When the cell can project its inputs, all steps' input matmuls become one
    big GEMM here, outside the loop; only h @ W_h is left inside it. W_h is
    read here too, once, rather than sliced from the kernel every step.
    """
    if _has_projection(cell):
        projected = cell.project_inputs(inputs)
        if not hasattr(cell, "recurrent_weights"):
            return projected, cell.step_projected
        weights = cell.recurrent_weights()
        return projected, lambda x_t, state: cell.step_projected(
            x_t, state, weights)

    def step(x_t, state):
        return cell(x_t, state, training=training)
    return inputs, step


def _mask_step(t, sequence_length, output, new_state, state):
    """Zeros outputs and freezes states of rows whose sequence has ended."""
    alive = tf.expand_dims(t < sequence_length, 1)  # [batch, 1]
    output = tf.where(alive, output, tf.zeros_like(output))
    new_state = tf.nest.map_structure(
        lambda new, old: tf.where(alive, new, old), new_state, state)
    return output, new_state


def _output_array(dtype, num_steps, output_size, batch_dim):
    return tf.TensorArray(
        dtype, size=num_steps, element_shape=[batch_dim, output_size])


def dynamic_rnn(cell, inputs, initial_state=None, sequence_length=None,
                time_major=False, training=False, parallel_iterations=32,
                swap_memory=False):
    """Runs `cell` over every time step of `inputs`, like TF1 tf.nn.dynamic_rnn.

    Args:
      cell: an RNNCell (rnn.cells); if it has `project_inputs` and
        `step_projected`, the input projection of all steps is one matmul.
      inputs: float `[batch, time, depth]`, or `[time, batch, depth]` if
        `time_major`. The time dimension may be unknown until run time, and
        0 (no outputs, the initial state) except under jit_compile, where
        XLA refuses the loop's slice of an empty input.
      initial_state: state structure of `[batch, size]` tensors; None means
        `cell.zero_state(batch, inputs.dtype)`.
      sequence_length: optional int `[batch]`; past a row's length its outputs
        are zero and its state is copied through unchanged.
      time_major: layout of `inputs` and of the returned outputs.
      training: Python bool handed to the cell (turns on dropout wrappers).
      parallel_iterations, swap_memory: passed to tf.while_loop.

    Returns:
      (outputs, final_state): outputs `[batch, time, output_size]` (or
      `[time, batch, output_size]` if `time_major`); final_state has the
      structure of the cell's state.
    """
    inputs = tf.convert_to_tensor(inputs)
    if not time_major:
        inputs = tf.transpose(inputs, [1, 0, 2])  # [time, batch, depth]
    static_steps, static_batch = inputs.shape[0], inputs.shape[1]
    num_steps = tf.shape(inputs)[0]
    if initial_state is None:
        initial_state = cell.zero_state(tf.shape(inputs)[1], inputs.dtype)
    if sequence_length is not None:
        sequence_length = tf.cast(sequence_length, tf.int32)

    step_inputs, step = _step_function(cell, inputs, training)
    input_ta = tf.TensorArray(
        step_inputs.dtype, size=num_steps,
        element_shape=step_inputs.shape[1:]).unstack(step_inputs)
    output_ta = _output_array(
        inputs.dtype, num_steps, cell.output_size, static_batch)

    def body(t, state, output_ta):
        output, new_state = step(input_ta.read(t), state)
        if sequence_length is not None:
            output, new_state = _mask_step(
                t, sequence_length, output, new_state, state)
        return t + 1, new_state, output_ta.write(t, output)

    _, final_state, output_ta = tf.while_loop(
        lambda t, *_: t < num_steps, body,
        (tf.constant(0), initial_state, output_ta),
        parallel_iterations=parallel_iterations, swap_memory=swap_memory,
        maximum_iterations=num_steps)

    if static_batch is None:  # TensorFlow cannot stack no elements of an unknown shape
        outputs = tf.cond(num_steps > 0, output_ta.stack, lambda: tf.zeros(
            [0, tf.shape(inputs)[1], cell.output_size], inputs.dtype))
    else:
        outputs = output_ta.stack()  # [time, batch, output_size], time-major
    outputs.set_shape([static_steps, static_batch, cell.output_size])
    if not time_major:
        outputs = tf.transpose(outputs, [1, 0, 2])  # [batch, time, output]
    return outputs, final_state
