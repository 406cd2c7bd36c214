"""Helpers shared by the numerical tests of the cells, kernels and dynamic_rnn."""

import numpy as np
import tensorflow as tf


def numpy_initializer(seed, scale=0.5):
    """Deterministic (shape, dtype) -> Tensor initializer with nonzero values."""
    rng = np.random.default_rng(seed)

    def init(shape, dtype):
        return tf.constant(rng.uniform(-scale, scale, shape), dtype=dtype)
    return init


def maybe_function(fn, mode):
    """fn as it is ("eager"), in a tf.function ("function"), or compiled with XLA ("jit")."""
    if mode == "eager":
        return fn
    return tf.function(fn, jit_compile=(mode == "jit"))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
