"""The one table of RNN kernels (what each needs, which cells it runs, whether it compiles
under XLA) and the library kernels in it: TensorFlow's BlockLSTM and cuDNN over LSTMCell's
variables.

Every kernel runs one cell over a whole time-major sequence and reads the
cell's own variables, so the variables (and checkpoints) are the same in every
mode. The model, training, the driver and the benchmark all read KERNELS;
nothing else names a mode.
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from errors import UserError

from . import cells as cells_lib
from . import dynamic_rnn as dynamic_rnn_lib
from .cells import LSTMStateTuple
from .fused_lstm import fused_lstm, require_tanh


class NoGPUError(UserError):
    """Raised when the cuDNN path is asked for on a machine without a GPU."""


class XLAError(UserError):
    """XLA asked for with a kernel that has no XLA version."""


class UnsupportedError(UserError, ValueError):
    """A kernel asked for a cell or a regularisation it cannot run."""


def gpu_available():
    """True when TensorFlow sees at least one GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def _rocm_build():
    """MIOpen orders an LSTM's gates i, f, o, c, not cuDNN's i, f, c, o that
    canonical_to_cudnn lays out."""
    return tf.sysconfig.get_build_info().get("is_rocm_build", False)


def cudnn_available():
    """True when TensorFlow sees a GPU and is not a ROCm build (_rocm_build)."""
    return gpu_available() and not _rocm_build()


def _check_cudnn():
    """Raises NoGPUError unless the cudnn kernel can run here (see cudnn_available)."""
    if not gpu_available():
        raise NoGPUError("rnn_mode cudnn needs a GPU but TensorFlow sees none; use fused, "
                         "block or auto")
    if _rocm_build():
        raise NoGPUError("rnn_mode cudnn lays out cuDNN's gate order, and this TensorFlow is a "
                         "ROCm build (MIOpen orders the gates otherwise); use fused, block or "
                         "auto")


def _check_fusable(cell, path):
    require_tanh(cell, path)
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


def block_lstm(cell, inputs, initial_state, weight_mask=None):
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
      weight_mask: optional float `[num_units, 4 * num_units]` multiplied
        into W_h (weight drop).

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
        w=cell.masked_kernel(weight_mask), wci=no_peephole, wcf=no_peephole, wco=no_peephole,
        b=cell.bias, forget_bias=cell.forget_bias,
        cell_clip=-1.0,  # <= 0 disables clipping; LSTMCell never clips.
        use_peephole=False)
    outputs = result.h  # [num_steps, batch, num_units], time-major
    return outputs, _final_state(result.cs, outputs, initial_state)


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


def cudnn_lstm(cell, inputs, initial_state, weight_mask=None):
    """Runs an LSTMCell over a whole sequence in cuDNN (GPU only).

    The cuDNN params are built from `cell.kernel`/`cell.bias` on every call, so
    variables and checkpoints keep LSTMCell's canonical layout and gradients
    flow back to them through the conversion.

    Args:
      cell: an LSTMCell with tanh activation.
      inputs: float32 `[num_steps, batch, input_size]`, time-major.
      initial_state: LSTMStateTuple of float32 `[batch, num_units]`.
      weight_mask: optional float `[num_units, 4 * num_units]` multiplied
        into W_h (weight drop).

    Returns:
      (outputs `[num_steps, batch, num_units]` time-major, LSTMStateTuple).

    Raises:
      NoGPUError: if TensorFlow sees no GPU.
      ValueError: if the cell's activation is not tanh.
    """
    _check_cudnn()
    _check_fusable(cell, "cudnn_lstm")
    params = canonical_to_cudnn(cell.masked_kernel(weight_mask), cell.bias, cell.input_size,
                                cell.num_units, cell.forget_bias)
    # cuDNN states carry a leading layer dimension: [1, batch, H].
    outputs, h, c, _ = tf.raw_ops.CudnnRNN(
        input=inputs, input_h=tf.expand_dims(initial_state.h, 0),
        input_c=tf.expand_dims(initial_state.c, 0), params=params,
        rnn_mode="lstm", input_mode="linear_input",
        direction="unidirectional",
        is_training=True)  # keeps the reserve space the gradient needs
    return outputs, LSTMStateTuple(c[0], h[0])


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One way to run an RNN layer.

    run: (cell, inputs [T, batch, in] time-major, state, training,
      recurrent_mask=None, weight_mask=None) -> (outputs [T, batch, H]
      time-major, final state). The masks are float, scaled by 1/keep:
      recurrent_mask [batch, H] multiplies h_{t-1} before W_h at every step,
      weight_mask (the cell's recurrent_shape) multiplies W_h. fused's run also
      takes matmul=, the products over all steps in another precision (see
      precision.py; precision.check lets only fused be asked for it).
    xla: it can run inside an XLA-compiled step (jit_compile=True).
    needs_gpu: it runs only where TensorFlow sees a GPU.
    default_jit: steps are compiled with XLA unless the user says otherwise
      (measured fastest that way on CPU for our own LSTMs).
    cells: the cells it runs (configs.CELLS names).
    recurrent_mask: it can mask h_{t-1} inside the recurrence (library
      kernels cannot reach inside theirs; weight_mask every kernel takes).
    """

    name: str
    run: Callable
    xla: bool
    needs_gpu: bool
    default_jit: bool
    summary: str
    cells: tuple = ("lstm",)
    recurrent_mask: bool = False


def _basic(cell, inputs, state, training, recurrent_mask=None, weight_mask=None):
    if recurrent_mask is not None or weight_mask is not None:
        cell = cells_lib.MaskedRecurrence(cell, recurrent_mask, weight_mask)
    return dynamic_rnn_lib.dynamic_rnn(cell, inputs, state, time_major=True)


def _fused(cell, inputs, state, training, recurrent_mask=None, weight_mask=None,
           matmul=None):
    # Forward-only passes unrolled: under XLA the static per-step slices
    # compile to vectorized code (about 2x faster at H=200 and 1.2x at
    # H=650); with a backward pass the while_loop measured as fast.
    # Products of another precision (matmul) run outside XLA: the loops then
    # compile on their own.
    return fused_lstm(cell, inputs, state, unroll=not training,
                      recurrent_mask=recurrent_mask, weight_mask=weight_mask,
                      matmul=matmul, compile_loops=matmul is not None)


def _library(kernel_fn):
    def run(cell, inputs, state, training, recurrent_mask=None, weight_mask=None):
        if recurrent_mask is not None:
            raise UnsupportedError(f"{kernel_fn.__name__} cannot mask the recurrent h")
        return kernel_fn(cell, inputs, state, weight_mask=weight_mask)
    return run


KERNELS = {k.name: k for k in (
    Kernel("basic", _basic, xla=True, needs_gpu=False, default_jit=True,
           summary="our dynamic_rnn over any cell", cells=("lstm", "gru", "rnn"),
           recurrent_mask=True),
    Kernel("fused", _fused, xla=True, needs_gpu=False, default_jit=True,
           summary="our whole-sequence LSTM with a hand-written backward pass",
           recurrent_mask=True),
    Kernel("block", _library(block_lstm), xla=False, needs_gpu=False, default_jit=False,
           summary="TensorFlow's BlockLSTM kernel"),
    Kernel("cudnn", _library(cudnn_lstm), xla=False, needs_gpu=True, default_jit=False,
           summary="cuDNN (GPU only)"),
)}
NAMES = tuple(KERNELS)
AUTO = "auto"  # cudnn on a GPU, else fused (under XLA); basic for GRU and RNN cells


def resolve(name, cell="lstm", recurrent_mask=False):
    """The kernel name to use for `cell`: "auto" is the first of cudnn (on a GPU), fused and
    basic that runs the cell (and masks the recurrent h, if asked).

    Args:
      name: a name of KERNELS, or "auto".
      cell: the cell the kernel must run: "lstm", "gru" or "rnn".
      recurrent_mask: the kernel must mask h_{t-1} inside the recurrence
        (variational recurrent dropout).
    Raises:
      NoGPUError: a GPU-only kernel asked for on a host without a GPU.
      UnsupportedError: a kernel that cannot run the cell or the recurrent mask.
      ValueError: an unknown name.
    """
    if name == AUTO:
        candidates = (["cudnn"] if cudnn_available() else []) + ["fused", "basic"]
        return next(k for k in candidates if _runs(KERNELS[k], cell, recurrent_mask))
    if name not in KERNELS:
        raise ValueError(f"unknown rnn_mode {name!r}; choose one of {AUTO}, {', '.join(NAMES)}")
    kernel = KERNELS[name]
    if cell not in kernel.cells:
        raise UnsupportedError(f"rnn_mode {name} runs only {', '.join(kernel.cells)} cells, not "
                               f"cell={cell}; use rnn_mode basic (or auto)")
    if recurrent_mask and not kernel.recurrent_mask:
        raise UnsupportedError(f"rnn_mode {name} cannot drop the recurrent h "
                               f"(recurrent_keep_prob < 1); use rnn_mode fused, basic or auto")
    if kernel.needs_gpu:
        _check_cudnn()
    return name


def _runs(kernel, cell, recurrent_mask):
    return cell in kernel.cells and (kernel.recurrent_mask or not recurrent_mask)


def jit_compile(name, xla=None):
    """Whether steps of kernel `name` (resolved) compile with XLA: `xla` if given, else its default.

    Raises:
      XLAError: xla=True for a kernel that has no XLA version.
    """
    kernel = KERNELS[name]
    if xla and not kernel.xla:
        raise XLAError(f"--rnn_mode={name} cannot run under --xla (its kernel has no XLA "
                       f"version); use --rnn_mode=fused or basic with --xla")
    return kernel.default_jit if xla is None else bool(xla)
