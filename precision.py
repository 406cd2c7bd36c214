"""The training step's precision: float32 throughout (the default), or large products in bfloat16.

With bfloat16 (`--precision=bfloat16`) the products over all time steps (each
LSTM layer's input projection and its weight and input gradients, the softmax
and its two gradients) take bfloat16 operands and run on TensorFlow's own
MatMul (oneDNN), outside XLA. XLA's CPU compiler turns bfloat16 dots back into
float32 ones (measured slower than float32), while oneDNN runs them on the
CPU's bfloat16 instructions: 283-315 against 150-188 GFLOPS for float32 on an
AMD EPYC with avx512_bf16 (2026-12-03). oneDNN accumulates in float32 and
rounds each product's result to bfloat16; it comes back as float32.

Everything else stays float32: the weights (the master copy SGD updates), the
recurrent state and the per-step recurrent products, the gate arithmetic, the
loss, clipping and the update. Forward-only passes (validation, test, score)
run in float32 as they always did, so the perplexities reported are exact.
The training step is then no longer one XLA program: fused_lstm's loops and
the loss compile as pieces of it (see training.make_train_step).
"""

import os

import tensorflow as tf

import errors
import host

FLOAT32, BFLOAT16 = "float32", "bfloat16"
PRECISIONS = (FLOAT32, BFLOAT16)
# CPU flags (/proc/cpuinfo) of instructions that multiply bfloat16 natively.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# ONEDNN_MAX_CPU_ISA values below avx512_core, where oneDNN has no bfloat16 MatMul: with
# one, on a CPU with avx512f (where TensorFlow sends bfloat16 products to oneDNN), the
# first product aborts the process (measured: SIGSEGV or an uncaught C++ exception).
_ONEDNN_NO_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


class PrecisionError(errors.UserError):
    """A precision that does not exist or cannot run with the other settings."""


def check(precision, rnn_mode, xla=True, strategy="none", chosen_by_auto_for=None,
          environ=None):
    """Raises PrecisionError unless `precision` can train with the resolved rnn_mode and xla.

    Args:
      precision: one of PRECISIONS.
      rnn_mode: the resolved kernel name (not auto).
      xla: whether the steps compile with XLA (resolved).
      strategy: the data-parallel strategy name ("none" for one device).
      chosen_by_auto_for: when --rnn_mode=auto resolved to rnn_mode, what in the config
        made it (e.g. "cell=gru"), for the message.
      environ: the environment the training will run in; None: this process's.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; choose one of "
                             f"{', '.join(PRECISIONS)}")
    if precision == FLOAT32:
        return
    if rnn_mode != "fused":
        why = (f" (--rnn_mode=auto's choice for {chosen_by_auto_for})" if chosen_by_auto_for
               else "")
        raise PrecisionError(f"--precision={precision} runs only with --rnn_mode=fused (auto on "
                             f"a CPU for an LSTM), not {rnn_mode}{why}")
    if not xla:
        raise PrecisionError(f"--precision={precision} compiles fused mode's loops with XLA; "
                             f"drop --xla=0")
    if strategy not in ("none", None):
        raise PrecisionError(f"--precision={precision} trains on one device only for now, not "
                             f"with strategy {strategy}; train on one device or use "
                             f"--precision=float32")
    cap = onednn_cap_without_bfloat16(environ)
    if cap:
        raise PrecisionError(f"--precision={precision} runs its products on oneDNN, which "
                             f"ONEDNN_MAX_CPU_ISA={cap} leaves without bfloat16 (it would "
                             f"abort); unset ONEDNN_MAX_CPU_ISA or use --precision=float32")


def onednn_cap_without_bfloat16(environ=None, flags=None):
    """ONEDNN_MAX_CPU_ISA's value if it leaves TensorFlow's bfloat16 MatMul with no oneDNN
    kernel on this CPU (below avx512_core, the CPU with avx512f, oneDNN's rewrites on);
    else None. environ, flags: None reads this process's and this CPU's."""
    environ = os.environ if environ is None else environ
    flags = host.cpu_flags() if flags is None else flags
    cap = environ.get("ONEDNN_MAX_CPU_ISA") or environ.get("DNNL_MAX_CPU_ISA", "")  # old name
    if cap.upper() in _ONEDNN_NO_BF16 and "avx512f" in flags and _onednn_on(environ):
        return cap
    return None


def _onednn_on(environ):
    """Whether TensorFlow's oneDNN rewrites are on (TF_ENABLE_ONEDNN_OPTS unset, or not 0)."""
    return environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false")


def native_bfloat16(flags=None):
    """The CPU flag that multiplies bfloat16 natively (avx512_bf16, amx_bf16), or None.

    Without one, oneDNN emulates bfloat16 products and they may run slower than
    float32; the driver says so at start-up.
    """
    if flags is None:
        flags = host.cpu_flags()
    return next((flag for flag in _BF16_FLAGS if flag in flags), None)


def describe(precision, flags=None, environ=None):
    """The start-up line's words for `precision`: what runs in it and on which instructions.

    flags: the CPU's flags; None reads /proc/cpuinfo. environ: None reads this process's.
    """
    if precision == FLOAT32:
        return FLOAT32
    if not _onednn_on(os.environ if environ is None else environ):
        return (f"{precision} (the large products, on TensorFlow's own MatMul: oneDNN is off, "
                f"TF_ENABLE_ONEDNN_OPTS=0; maybe slower than float32)")
    flag = native_bfloat16(flags)
    if flag:
        return f"{precision} (the large products, on oneDNN with {flag})"
    return (f"{precision} (the large products, on oneDNN; no bfloat16 instructions found "
            f"in this CPU's flags: maybe emulated, maybe slower than float32)")


def matmul(a, b, transpose_a=False, transpose_b=False):
    """a @ b (2-D) with bfloat16 operands on TensorFlow's MatMul; the result in a's dtype.

    Its gradient (by autodiff) is two bfloat16 products as well.
    """
    product = tf.matmul(tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16),
                        transpose_a=transpose_a, transpose_b=transpose_b)
    return tf.cast(product, a.dtype)
