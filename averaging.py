"""NT-ASGD's weight average (Merity et al. 2018): when to start it, keeping it, evaluating with it.

Training goes on with the same SGD steps; from the epoch validation stops
improving, a running average of the weights after every step is kept beside
them, and evaluation, the best checkpoint and export use that average.
"""

import contextlib

import tensorflow as tf


def should_start(valid_perplexities, nonmono):
    """NT-ASGD's trigger, checked after each epoch's validation (AWD-LSTM's rule).

    Args:
      valid_perplexities: every epoch's validation perplexity so far, the
        newest last.
      nonmono: how many of the newest epochs are not compared against.
    Returns:
      True when the newest is worse than the best of all but the newest `nonmono`.
    """
    *before, newest = valid_perplexities
    return len(before) > nonmono and newest > min(before[:-nonmono])


class WeightAverage(tf.Module):
    """The average of a model's weights after each step since start(); count 0 while off.

    As AWD-LSTM's switch to a fresh ASGD: the weights at the switch are not in the average;
    the first step's replace them. (PyTorch's ASGD(t0=0), which AWD-LSTM's code uses, also
    copies the second step's weights, so it averages from the second step on: one step of
    thousands; this is the paper's average from the switch.) count: 0 off, -1 started
    with no step yet (the average then holds the weights at the switch), else the steps
    averaged.
    Its variables mirror model.trainable_variables in order, so a checkpoint
    holds the raw weights (to go on training) and the average (to evaluate).
    """

    def __init__(self, model):
        super().__init__(name="weight_average")
        with self.name_scope:
            self.averages = [tf.Variable(tf.zeros_like(v), trainable=False, name="average")
                             for v in model.trainable_variables]
            self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")

    @property
    def active(self):
        return int(self.count.numpy()) != 0

    def start(self, model):
        """Averaging starts with the next step; until then the average is the weights now."""
        for average, weight in zip(self.averages, model.trainable_variables):
            average.assign(weight)
        self.count.assign(-1)

    def update(self, model):
        """Folds the model's current weights into the average (when active): avg += (w - avg) / n,
        n the steps averaged with this one (1 at the first: the average becomes w)."""
        def fold():
            steps = tf.maximum(self.count, 0) + 1
            n = tf.cast(steps, tf.float32)
            for average, weight in zip(self.averages, model.trainable_variables):
                average.assign_add((weight - average) / n)
            self.count.assign(steps)
            return tf.constant(True)
        return tf.cond(self.count != 0, fold, lambda: tf.constant(False))

    @contextlib.contextmanager
    def swapped_into(self, model):
        """While entered, the model's weights are the average (if active); restored after."""
        if not self.active:
            yield
            return
        raw = [tf.identity(v) for v in model.trainable_variables]
        for weight, average in zip(model.trainable_variables, self.averages):
            weight.assign(average)
        try:
            yield
        finally:
            for weight, value in zip(model.trainable_variables, raw):
                weight.assign(value)


def with_averaging(average, model, train_step):
    """train_step followed by average.update(model) in the same call (outputs unchanged)."""
    @tf.function
    def step(x, y):
        outputs = train_step(x, y)
        with tf.control_dependencies(tf.nest.flatten(outputs)):
            average.update(model)
        return outputs
    return step
