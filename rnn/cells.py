"""Recurrent cells as tf.Modules with the classic RNNCell contract (no Keras)."""

import collections
import math

import tensorflow as tf

LSTMStateTuple = collections.namedtuple("LSTMStateTuple", ["c", "h"])


def glorot_uniform(shape, dtype=tf.float32):
    """Default kernel initializer: U(-a, a), a = sqrt(6 / (fan_in + fan_out)).

    Fans are taken from the whole fused kernel (rows, columns), as Keras does,
    so an LSTM kernel [in+H, 4H] gets a slightly smaller range than one gate.

    Args:
      shape: 2-D shape [fan_in, fan_out].
      dtype: floating dtype of the result.

    Returns:
      A `dtype` tensor of `shape`.
    """
    fan_in, fan_out = shape[0], shape[-1]
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit, dtype=dtype)


def zeros_initializer(shape, dtype=tf.float32):
    """Default bias initializer: zeros of `shape`."""
    return tf.zeros(shape, dtype=dtype)


def _constant_initializer(value):
    def init(shape, dtype=tf.float32):
        return tf.fill(shape, tf.constant(value, dtype=dtype))
    return init


def _linear(inputs, weights):
    """inputs [..., n] @ weights [n, m] -> [..., m], one GEMM for any rank."""
    if inputs.shape.rank == 2:
        return tf.matmul(inputs, weights)
    # tensordot reshapes to 2-D so all leading dims share one matmul.
    return tf.tensordot(inputs, weights, axes=1)


class RNNCell(tf.Module):
    """Base class: one step `(output, new_state) = cell(inputs, state)`.

    Subclasses create their variables in the constructor, so a cell is
    checkpointable before its first call and safe to build under a
    `tf.distribute` strategy scope and to call inside `tf.function`.
    """

    @property
    def state_size(self):
        """Int or nested structure of ints: the state's trailing sizes."""
        raise NotImplementedError

    @property
    def output_size(self):
        """Int: trailing size of the output."""
        raise NotImplementedError

    @property
    def dtype(self):
        """Dtype of the variables (and the default dtype of zero_state)."""
        return self._dtype

    def zero_state(self, batch_size, dtype=None):
        """Zeros with the structure of `state_size`.

        Args:
          batch_size: int or scalar int tensor.
          dtype: dtype of the zeros; None means the cell's dtype.

        Returns:
          Nested structure like `state_size` of `[batch_size, size]` zeros.
        """
        dtype = self.dtype if dtype is None else dtype
        return tf.nest.map_structure(
            lambda size: tf.zeros([batch_size, size], dtype=dtype),
            self.state_size)

    def __call__(self, inputs, state, training=False):
        """One step.

        Args:
          inputs: `[batch, input_size]`.
          state: structure like `state_size` of `[batch, size]` tensors.
          training: Python bool; only dropout wrappers look at it.

        Returns:
          (output `[batch, output_size]`, new_state like `state`).
        """
        raise NotImplementedError


class _ProjectedCell(RNNCell):
    """A cell whose input half of the matmul can be done for all steps at once.

    `__call__(x, s) == step_projected(project_inputs(x), s)`. dynamic_rnn uses
    the split form to hoist the input matmul out of the time loop, and reads
    `recurrent_weights()` once outside the loop too: slicing W_h out of the
    fused kernel inside the loop costs a kernel-sized gradient every step
    (measured 2x slower for H=650).

    The constructor here is the one every such cell shares; subclasses then
    create their variables inside `self.name_scope`.
    """

    def __init__(self, num_units, input_size, activation, dtype, name):
        super().__init__(name=name)
        self._num_units = num_units
        self._input_size = input_size
        self._activation = activation
        self._dtype = tf.as_dtype(dtype)

    @property
    def state_size(self):
        return self._num_units

    @property
    def output_size(self):
        return self._num_units

    @property
    def input_size(self):
        return self._input_size

    @property
    def num_units(self):
        return self._num_units

    @property
    def activation(self):
        return self._activation

    def project_inputs(self, inputs):
        """Input projection, done once for many steps.

        Args:
          inputs: `[..., input_size]`, any number of leading dims.

        Returns:
          `[..., projection_size]`: inputs @ W_x + bias.
        """
        raise NotImplementedError

    @property
    def recurrent_shape(self):
        """[num_units, k * num_units]: the shape of the h rows of the kernel(s), all gates."""
        raise NotImplementedError

    def recurrent_weights(self, weight_mask=None):
        """The recurrent (h-side) weight tensors, read once per sequence.

        Args:
          weight_mask: optional float `recurrent_shape`, multiplied into the
            weights (weight drop: DropConnect on W_h, already scaled by 1/keep).
        """
        raise NotImplementedError

    def step_projected(self, projected_t, state, recurrent_weights=None,
                       recurrent_mask=None):
        """One step given the projected input of that step.

        Args:
          projected_t: `[batch, projection_size]` from `project_inputs`.
          state: as in `__call__`.
          recurrent_weights: `self.recurrent_weights()` computed by the
            caller outside its loop; None reads them here.
          recurrent_mask: optional float `[batch, num_units]`: h_{t-1} is
            multiplied by it before the recurrent matmul(s) (variational
            recurrent dropout, already scaled by 1/keep); the state carried
            on is not.

        Returns:
          (output, new_state) as in `__call__`.
        """
        raise NotImplementedError

    def __call__(self, inputs, state, training=False):
        del training  # No dropout inside the cell; see DropoutWrapper.
        return self.step_projected(self.project_inputs(inputs), state)


def _make_variable(initializer, shape, dtype, name):
    return tf.Variable(initializer(shape, dtype), name=name)


def _masked(x, mask):
    """x * mask, or x itself when there is no mask (the tutorial's graph unchanged)."""
    return x if mask is None else x * mask


class BasicRNNCell(_ProjectedCell):
    """Elman cell: h' = activation([x, h] @ kernel + bias); output = state = h'.

    Variables: `kernel` [input_size + num_units, num_units], `bias` [num_units].
    """

    def __init__(self, num_units, input_size, activation=tf.tanh,
                 kernel_initializer=None, bias_initializer=None,
                 dtype=tf.float32, name=None):
        """Creates the variables.

        Args:
          num_units: int, hidden size H.
          input_size: int, depth of the inputs.
          activation: elementwise function applied to the pre-activation.
          kernel_initializer: `(shape, dtype) -> Tensor`; glorot-uniform if None.
          bias_initializer: `(shape, dtype) -> Tensor`; zeros if None.
          dtype: variable dtype.
          name: module name.
        """
        super().__init__(num_units, input_size, activation, dtype, name)
        with self.name_scope:
            self.kernel = _make_variable(
                kernel_initializer or glorot_uniform,
                [input_size + num_units, num_units], self._dtype, "kernel")
            self.bias = _make_variable(
                bias_initializer or zeros_initializer, [num_units],
                self._dtype, "bias")

    def project_inputs(self, inputs):
        """inputs `[..., input_size]` -> `[..., num_units]` = x @ W_x + bias."""
        return _linear(inputs, self.kernel[:self._input_size]) + self.bias

    @property
    def recurrent_shape(self):
        return [self._num_units, self._num_units]

    def recurrent_weights(self, weight_mask=None):
        """W_h `[num_units, num_units]`, the h rows of `kernel`."""
        return _masked(self.kernel[self._input_size:], weight_mask)

    def step_projected(self, projected_t, state, recurrent_weights=None,
                       recurrent_mask=None):
        """projected_t `[batch, num_units]`, state `[batch, num_units]`."""
        w_h = (self.recurrent_weights() if recurrent_weights is None
               else recurrent_weights)
        h = self._activation(projected_t + tf.matmul(_masked(state, recurrent_mask), w_h))
        return h, h


class GRUCell(_ProjectedCell):
    """GRU with TF1 GRUCell semantics (reset applied before the matmul).

    r, u = sigmoid([x, h] @ gates_kernel + gates_bias)      (r first, then u)
    c = activation([x, r * h] @ candidate_kernel + candidate_bias)
    h' = u * h + (1 - u) * c;  output = state = h'.

    Variables: `gates_kernel` [in+H, 2H], `gates_bias` [2H] (init 1.0, so the
    cell starts out mostly remembering, as TF1), `candidate_kernel` [in+H, H],
    `candidate_bias` [H] (init 0).
    """

    def __init__(self, num_units, input_size, activation=tf.tanh,
                 kernel_initializer=None, bias_initializer=None,
                 dtype=tf.float32, name=None):
        """Creates the variables.

        Args:
          num_units: int, hidden size H.
          input_size: int, depth of the inputs.
          activation: candidate activation.
          kernel_initializer: `(shape, dtype) -> Tensor`; glorot-uniform if None.
          bias_initializer: used for both biases if given; otherwise gates 1.0
            and candidate 0.0, as TF1.
          dtype: variable dtype.
          name: module name.
        """
        super().__init__(num_units, input_size, activation, dtype, name)
        kernel_init = kernel_initializer or glorot_uniform
        rows = input_size + num_units
        with self.name_scope:
            self.gates_kernel = _make_variable(
                kernel_init, [rows, 2 * num_units], self._dtype, "gates_kernel")
            self.gates_bias = _make_variable(
                bias_initializer or _constant_initializer(1.0),
                [2 * num_units], self._dtype, "gates_bias")
            self.candidate_kernel = _make_variable(
                kernel_init, [rows, num_units], self._dtype, "candidate_kernel")
            self.candidate_bias = _make_variable(
                bias_initializer or zeros_initializer, [num_units],
                self._dtype, "candidate_bias")

    def project_inputs(self, inputs):
        """inputs `[..., input_size]` -> `[..., 3H]`: gates (r, u) then candidate.

        The candidate's input half is linear in x (r only scales h), so it can
        be projected ahead too.
        """
        n = self._input_size
        w_x = tf.concat(
            [self.gates_kernel[:n], self.candidate_kernel[:n]], axis=1)
        b = tf.concat([self.gates_bias, self.candidate_bias], axis=0)
        return _linear(inputs, w_x) + b

    @property
    def recurrent_shape(self):
        """[H, 3H]: the gates' W_h columns, then the candidate's."""
        return [self._num_units, 3 * self._num_units]

    def recurrent_weights(self, weight_mask=None):
        """(gates W_h `[H, 2H]`, candidate W_h `[H, H]`), the h rows."""
        n = self._input_size
        gates_h, cand_h = self.gates_kernel[n:], self.candidate_kernel[n:]
        if weight_mask is None:
            return gates_h, cand_h
        gates_mask, cand_mask = tf.split(weight_mask, [2 * self._num_units, self._num_units],
                                         axis=1)
        return gates_h * gates_mask, cand_h * cand_mask

    def step_projected(self, projected_t, state, recurrent_weights=None,
                       recurrent_mask=None):
        """projected_t `[batch, 3H]`, state `[batch, H]`."""
        gates_h, cand_h = (self.recurrent_weights() if recurrent_weights is None
                           else recurrent_weights)
        units = self._num_units
        gates_x, cand_x = tf.split(projected_t, [2 * units, units], axis=1)
        # Both matmuls see the dropped h (Gal & Ghahramani's GRU); u * state carries it whole.
        dropped = _masked(state, recurrent_mask)
        gates = tf.sigmoid(gates_x + tf.matmul(dropped, gates_h))
        r, u = tf.split(gates, 2, axis=1)
        c = self._activation(cand_x + tf.matmul(r * dropped, cand_h))
        h = u * state + (1.0 - u) * c
        return h, h


class LSTMCell(_ProjectedCell):
    """LSTM without peepholes, TF1 BasicLSTMCell/LSTMBlockCell layout.

    [i, j, f, o] = split([x, h] @ kernel + bias, 4)      (one fused matmul)
    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * activation(j)
    h' = sigmoid(o) * activation(c');  output h', state LSTMStateTuple(c', h').

    Variables: `kernel` [input_size + num_units, 4 * num_units] and `bias`
    [4 * num_units]; the fused kernels (rnn/fused_lstm.py, rnn/kernels.py) read these same ones.
    """

    def __init__(self, num_units, input_size, forget_bias=1.0,
                 activation=tf.tanh, kernel_initializer=None,
                 bias_initializer=None, dtype=tf.float32, name=None):
        """Creates the variables.

        Args:
          num_units: int, hidden size H.
          input_size: int, depth of the inputs.
          forget_bias: float added to the forget gate pre-activation (not
            stored in `bias`), so the cell starts out remembering.
          activation: used on j and on c'.
          kernel_initializer: `(shape, dtype) -> Tensor`; glorot-uniform if None.
          bias_initializer: `(shape, dtype) -> Tensor`; zeros if None.
          dtype: variable dtype.
          name: module name.
        """
        super().__init__(num_units, input_size, activation, dtype, name)
        self._forget_bias = float(forget_bias)
        with self.name_scope:
            self.kernel = _make_variable(
                kernel_initializer or glorot_uniform,
                [input_size + num_units, 4 * num_units], self._dtype, "kernel")
            self.bias = _make_variable(
                bias_initializer or zeros_initializer, [4 * num_units],
                self._dtype, "bias")

    @property
    def state_size(self):
        return LSTMStateTuple(self._num_units, self._num_units)

    @property
    def forget_bias(self):
        return self._forget_bias

    def project_inputs(self, inputs):
        """inputs `[..., input_size]` -> `[..., 4H]` = x @ W_x + bias."""
        return _linear(inputs, self.kernel[:self._input_size]) + self.bias

    @property
    def recurrent_shape(self):
        return [self._num_units, 4 * self._num_units]

    def recurrent_weights(self, weight_mask=None):
        """W_h `[num_units, 4 * num_units]`, the h rows of `kernel`."""
        return _masked(self.kernel[self._input_size:], weight_mask)

    def masked_kernel(self, weight_mask=None):
        """`kernel` with its W_h rows multiplied by weight_mask (the variable itself if None).

        For the kernels that read the whole [x, h] kernel (rnn/fused_lstm.py,
        rnn/kernels.py): the gradient reaches the variable through the product.
        """
        if weight_mask is None:
            return self.kernel
        n = self._input_size
        return tf.concat([self.kernel[:n], self.kernel[n:] * weight_mask], axis=0)

    def step_projected(self, projected_t, state, recurrent_weights=None,
                       recurrent_mask=None):
        """projected_t `[batch, 4H]`, state LSTMStateTuple of `[batch, H]`."""
        w_h = (self.recurrent_weights() if recurrent_weights is None
               else recurrent_weights)
        c, h = state
        gates = projected_t + tf.matmul(_masked(h, recurrent_mask), w_h)
        i, j, f, o = tf.split(gates, 4, axis=1)
        new_c = (tf.sigmoid(f + self._forget_bias) * c
                 + tf.sigmoid(i) * self._activation(j))
        new_h = tf.sigmoid(o) * self._activation(new_c)
        return new_h, LSTMStateTuple(new_c, new_h)


class MaskedRecurrence(RNNCell):
    """A projected cell whose recurrent matmul sees h_{t-1} * recurrent_mask and W_h * weight_mask.

    The same masks at every step of a sequence: variational recurrent dropout
    (Gal & Ghahramani 2016) and weight drop (DropConnect on W_h, Merity et al.
    2018). The masks are given (float, already scaled by 1/keep), not drawn:
    whoever runs the batch draws them, so every kernel can apply the same ones.
    dynamic_rnn reads `recurrent_weights()` once, so W_h is masked once per
    sequence.
    """

    def __init__(self, cell, recurrent_mask=None, weight_mask=None, name=None):
        """Args:
          cell: a cell with project_inputs / recurrent_weights / step_projected.
          recurrent_mask: optional float `[batch, num_units]`.
          weight_mask: optional float `cell.recurrent_shape`.
        """
        super().__init__(name=name)
        self.cell = cell
        self._recurrent_mask = recurrent_mask
        self._weight_mask = weight_mask

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    @property
    def dtype(self):
        return self.cell.dtype

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    def project_inputs(self, inputs):
        return self.cell.project_inputs(inputs)

    def recurrent_weights(self):
        return self.cell.recurrent_weights(self._weight_mask)

    def step_projected(self, projected_t, state, recurrent_weights=None):
        if recurrent_weights is None:
            recurrent_weights = self.recurrent_weights()
        return self.cell.step_projected(projected_t, state, recurrent_weights,
                                        recurrent_mask=self._recurrent_mask)

    def __call__(self, inputs, state, training=False):
        del training  # the masks are on whenever given
        return self.step_projected(self.project_inputs(inputs), state)


class MultiRNNCell(RNNCell):
    """Stacks cells: layer k's output is layer k+1's input.

    The state is a tuple with one entry per layer, in order.
    """

    def __init__(self, cells, name=None):
        """Args: cells: non-empty list of RNNCells, bottom layer first.

        Raises:
          ValueError: if `cells` is empty.
        """
        super().__init__(name=name)
        if not cells:
            raise ValueError("MultiRNNCell needs at least one cell")
        self.cells = list(cells)

    @property
    def state_size(self):
        return tuple(cell.state_size for cell in self.cells)

    @property
    def output_size(self):
        return self.cells[-1].output_size

    @property
    def dtype(self):
        return self.cells[0].dtype

    def zero_state(self, batch_size, dtype=None):
        return tuple(cell.zero_state(batch_size, dtype) for cell in self.cells)

    def __call__(self, inputs, state, training=False):
        """inputs `[batch, in]`, state tuple per layer -> (top output, states)."""
        new_states = []
        output = inputs
        for cell, layer_state in zip(self.cells, state):
            output, new_state = cell(output, layer_state, training=training)
            new_states.append(new_state)
        return output, tuple(new_states)


def _check_keep_prob(name, value):
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value}")
    return float(value)


def _map_droppable(fn, state):
    """Applies fn to every state tensor except LSTMStateTuple.c (TF1 default).

    Dropping the memory cell c would erase long-term memory every step, so
    TF1's DropoutWrapper leaves it alone by default and so do we.
    """
    if isinstance(state, LSTMStateTuple):
        return LSTMStateTuple(state.c, fn(state.h))
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*[_map_droppable(fn, s) for s in state])
    if isinstance(state, (tuple, list)):
        return type(state)(_map_droppable(fn, s) for s in state)
    return fn(state)


class DropoutWrapper(RNNCell):
    """Dropout on a cell's inputs, outputs and new state, only when training.

    A fresh mask is drawn every step (not variational), kept values scaled by
    1/keep_prob. Randomness comes from a `tf.random.Generator` owned by the
    wrapper, so its state is checkpointed with the module and a resumed run
    draws the same masks. Deliberately has no `project_inputs`: input dropout
    must happen before the projection, so dynamic_rnn steps it call by call.
    """

    def __init__(self, cell, input_keep_prob=1.0, output_keep_prob=1.0,
                 state_keep_prob=1.0, seed=None, name=None):
        """Wraps `cell`.

        Args:
          cell: the RNNCell to wrap.
          input_keep_prob, output_keep_prob, state_keep_prob: floats in (0, 1].
          seed: int seed of the generator; None for a nondeterministic one.
          name: module name.

        Raises:
          ValueError: if a keep prob is outside (0, 1].
        """
        super().__init__(name=name)
        self.cell = cell
        self._input_keep_prob = _check_keep_prob(
            "input_keep_prob", input_keep_prob)
        self._output_keep_prob = _check_keep_prob(
            "output_keep_prob", output_keep_prob)
        self._state_keep_prob = _check_keep_prob(
            "state_keep_prob", state_keep_prob)
        with self.name_scope:
            if seed is None:
                self.generator = tf.random.Generator.from_non_deterministic_state()
            else:
                self.generator = tf.random.Generator.from_seed(seed)

    @property
    def state_size(self):
        return self.cell.state_size

    @property
    def output_size(self):
        return self.cell.output_size

    @property
    def dtype(self):
        return self.cell.dtype

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    def _dropout(self, x, keep_prob):
        if keep_prob == 1.0:
            return x
        keep = self.generator.uniform(tf.shape(x), dtype=x.dtype) < keep_prob
        return tf.where(keep, x / keep_prob, tf.zeros_like(x))

    def __call__(self, inputs, state, training=False):
        """As the wrapped cell; `training` (Python bool) turns dropout on."""
        if not training:
            return self.cell(inputs, state, training=False)
        inputs = self._dropout(inputs, self._input_keep_prob)
        output, new_state = self.cell(inputs, state, training=True)
        output = self._dropout(output, self._output_keep_prob)
        new_state = _map_droppable(
            lambda s: self._dropout(s, self._state_keep_prob), new_state)
        return output, new_state
