"""The form of the LSTM loops' per-step recurrent products under XLA, chosen per host.

fused_lstm's loops multiply a few rows by the same W_h at every step, and which form
of that product XLA runs fastest depends on the CPU and on W_h's size (measured, in
docs/SPEED.md): W_h as it is, a transposed copy with its rows contracted, or the whole
backward loop transposed. The choice is made once, at import, from the CPU's flags (as
capped by XLA_FLAGS' `--xla_cpu_max_isa`) or a visible GPU, never from the host's name; a fused run prints it in its start-up line
(per_step_forms).
"""

import os
from typing import NamedTuple, Optional

import tensorflow as tf

import host


class LoopForms(NamedTuple):
    """Per-step weight sizes (bytes of W_h) from which XLA's loops take another form of their
    per-step product; None: never, at every size the form of the weights as they are.

    The first three contract the weights' rows (fused_lstm's _per_step_matmul).
    """
    copying: Optional[int]  # the forward loop in a whole compiled step; any unrolled loop
    backward: Optional[int]  # the backward while loop (row-contracted, W_h as stored)
    own_forward: Optional[int]  # a forward while loop compiled on its own (bfloat16 training)
    # The backward while loop in [features, batch] layout, W_h @ dgates^T (fused_lstm's
    # _lstm_backward); where it applies, `backward` does not. Never an unrolled loop (nor
    # the while loop an unrolled one falls back to when T is unknown or 0).
    transposed_backward: Optional[int] = None


# By the CPU's flags, or a GPU, read at import (kind); outside XLA every size goes in as it
# is.
LOOP_FORMS = {
    # AVX-512 AMD host: the weights as they are in every loop, faster in whole steps run
    # alternately with each loop row-contracted: medium float32 -1.5%, bfloat16 -6%; large
    # training -1%, validation -2.7%, bfloat16 -6% (docs/SPEED.md, 2026-12-04 from 06:17).
    # The backward while loop transposed from 13 MiB of W_h: large's (34.3 MiB) training
    # step -1.3% to -3.1%, bfloat16 -3.7% (docs/SPEED.md, 2026-12-04 from 08:22); the loop
    # alone 11-24% faster from 13.8 MiB (H=950), +4% and -12% in two runs at 12.4 MiB,
    # slower under (medium's 6.4 MiB: its step +5%).
    "avx512f": LoopForms(copying=None, backward=None, own_forward=None,
                         transposed_backward=13 << 20),
    # Otherwise the rule as it was: rows contracted from 2 MB where that form needs no copy
    # of the weights or a forward loop compiles on its own, from 16 MB where it copies them
    # every pass. The AVX2 host measured H=1500's per-step products row-contracted 4.2 -> 2.8
    # ms (forward) and 5.9 -> 2.9 ms (backward); the 16 MB came from the AVX-512 host (93a6aaf).
    "no avx512f": LoopForms(copying=16 << 20, backward=2 << 20, own_forward=2 << 20),
    # With a GPU, where the ops run: the weights as they are in every loop. The forms above
    # were chosen by CPU measurements; none has been timed on a GPU.
    "gpu": LoopForms(copying=None, backward=None, own_forward=None),
}


# XLA's `--xla_cpu_max_isa` values below AVX-512: with one, XLA emits no AVX-512 code.
_BELOW_AVX512 = ("SSE4_2", "AVX", "AVX2")


def kind(flags, gpu=False, xla_flags=""):
    """LOOP_FORMS' key for a CPU with these flags, or "gpu" when TensorFlow sees a GPU.

    xla_flags: the XLA_FLAGS text; a `--xla_cpu_max_isa` below AVX-512 counts as a CPU
    without avx512f, since XLA's code then has none.
    """
    if gpu:
        return "gpu"
    if xla_max_isa(xla_flags) in _BELOW_AVX512:
        return "no avx512f"
    return "avx512f" if "avx512f" in flags else "no avx512f"


def xla_max_isa(xla_flags):
    """The value of `--xla_cpu_max_isa` in an XLA_FLAGS text, upper case; "" if not set."""
    value = ""
    for flag in xla_flags.split():
        name, _, text = flag.partition("=")
        if name == "--xla_cpu_max_isa":
            value = text.strip("'\"").upper()  # the last one counts, as in absl
    return value


KIND = kind(host.cpu_flags(), bool(tf.config.list_physical_devices("GPU")),
            os.environ.get("XLA_FLAGS", ""))
CHOSEN = LOOP_FORMS[KIND]  # the forms this process's loops take


def per_step_forms(units, own_loops=False):
    """The start-up line's words: each loop's per-step product form under XLA at H=units.

    own_loops: the loops compile on their own (bfloat16 training).
    """
    nbytes = units * 4 * units * 4  # float32 W_h [H, 4H]

    def form(min_bytes):
        return "rows contracted" if takes_form(nbytes, min_bytes) else "as they are"

    forward = CHOSEN.own_forward if own_loops else CHOSEN.copying
    backward = ("transposed" if takes_form(nbytes, CHOSEN.transposed_backward)
                else form(CHOSEN.backward))
    return (f"forward {form(forward)}, backward {backward}, "
            f"evaluation {form(CHOSEN.copying)} ({KIND})")


def takes_form(nbytes, min_bytes):
    """Whether per-step weights of `nbytes` take a LoopForms field's form from `min_bytes`."""
    return min_bytes is not None and nbytes >= min_bytes


def min_bytes(xla, loop):
    """The size of W_h from which `loop` (a LoopForms field) takes its form; None outside
    XLA, where every loop takes the weights as they are."""
    return getattr(CHOSEN, loop) if xla else None
