"""PTBModel: the paper's embedding -> stacked LSTM -> softmax word model, and its cost."""

import tensorflow as tf

from rnn import cells
from rnn import kernels

def _uniform(init_scale, seed):
    """A seeded initializer uniform in [-init_scale, init_scale]; variable k gets seed (seed, k)."""
    counter = iter(range(1 << 30))

    def initializer(shape, dtype=tf.float32):
        return tf.random.stateless_uniform(
            shape, seed=[seed, next(counter)], minval=-init_scale, maxval=init_scale, dtype=dtype)
    return initializer


class PTBModel(tf.Module):
    """Embedding [vocab, hidden] -> num_layers LSTMs -> softmax [hidden, vocab].

    As in the tutorial: every weight starts uniform in [-init_scale, init_scale]
    (the LSTM biases start at zero, as the tutorial's LSTM cells did), the LSTM
    forget bias is 0.0, and dropout (keep_prob) is applied to the embeddings
    and to every layer's output when training. The variables are the same in
    every rnn_mode, so a checkpoint moves between modes.
    """

    def __init__(self, vocab_size, hidden_size, num_layers, init_scale, keep_prob=1.0,
                 rnn_mode="auto", seed=0, name="ptb_model"):
        super().__init__(name=name)
        rnn_mode = kernels.resolve(rnn_mode)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.keep_prob = keep_prob
        self.rnn_mode = rnn_mode
        init = _uniform(init_scale, seed)
        with self.name_scope:
            self.embedding = tf.Variable(init([vocab_size, hidden_size]), name="embedding")
            self.cells = [
                cells.LSTMCell(hidden_size, hidden_size, forget_bias=0.0,
                               kernel_initializer=init, name=f"lstm_{layer}")
                for layer in range(num_layers)]
            self.softmax_w = tf.Variable(init([hidden_size, vocab_size]), name="softmax_w")
            self.softmax_b = tf.Variable(init([vocab_size]), name="softmax_b")

    @classmethod
    def from_config(cls, config, rnn_mode="auto", seed=0):
        return cls(config.vocab_size, config.hidden_size, config.num_layers, config.init_scale,
                   config.keep_prob, rnn_mode=rnn_mode, seed=seed)

    def zero_state(self, batch_size):
        """A tuple of num_layers LSTMStateTuple(c, h), each float32 [batch_size, hidden_size]."""
        return tuple(cell.zero_state(batch_size, tf.float32) for cell in self.cells)

    @property
    def uses_dropout(self):
        return self.keep_prob < 1.0

    def dropout_masks(self, seed, batch_size, num_steps):
        """The keep masks of one training batch: bool [num_steps, batch_size, hidden_size],
        one per dropout site (the embeddings, then each layer's output).

        Stateless: they depend only on `seed` (int [2]) and the site, so a resumed
        run draws exactly the masks an uninterrupted one would. Drawn with Philox
        as tf.nn.experimental.stateless_dropout draws them; the step function
        draws them outside XLA, whose Philox is slower and draws other numbers.
        """
        rate = 1.0 - self.keep_prob
        masks = []
        for site in range(self.num_layers + 1):
            site_seed = tf.random.experimental.stateless_fold_in(seed, site, alg="philox")
            uniform = tf.random.stateless_uniform(
                [num_steps, batch_size, self.hidden_size], seed=site_seed, alg="philox")
            masks.append(uniform >= rate)
        return tuple(masks)

    @staticmethod
    def mask_rows(keep_masks, start, stop):
        """The masks of batch rows [start, stop) out of dropout_masks(...) of the whole batch.

        A data-parallel replica that owns those rows draws the whole batch's
        masks and keeps its rows, so it drops exactly what one device would.
        """
        return tuple(mask[:, start:stop] for mask in keep_masks)  # [T, rows, H] each

    def _dropout(self, x, keep):
        if keep is None:
            return x
        # stateless_dropout's arithmetic: x / keep_prob where kept, else 0.
        scale = tf.constant(1 / (1 - (1.0 - self.keep_prob)), x.dtype)
        return tf.where(keep, x * scale, tf.zeros([], x.dtype))

    def hidden(self, inputs, state, training=False, seed=None, keep_masks=None):
        """The last layer's outputs, before the softmax.

        Args:
          inputs: int32 [batch_size, num_steps] word ids.
          state: as zero_state(batch_size): the state after the previous batch.
          training: apply dropout (when keep_prob < 1).
          seed: int [2] seed of the dropout masks; with dropout, it or keep_masks
            is required.
          keep_masks: dropout_masks(seed, batch_size, num_steps), drawn beforehand.
        Returns:
          (outputs float32 [batch_size, num_steps, hidden_size], final state).
        """
        masks = [None] * (self.num_layers + 1)
        if training and self.uses_dropout:
            if keep_masks is None and seed is None:
                raise ValueError("training with dropout needs a seed")
            if keep_masks is None:
                batch_size, num_steps = tf.unstack(tf.shape(inputs))
                keep_masks = self.dropout_masks(seed, batch_size, num_steps)
            masks = keep_masks
        # [num_steps, batch, hidden], time-major: what the fused kernels take.
        x = tf.nn.embedding_lookup(self.embedding, tf.transpose(inputs))
        x = self._dropout(x, masks[0])
        final = []
        for layer, (cell, layer_state) in enumerate(zip(self.cells, state)):
            x, layer_final = kernels.KERNELS[self.rnn_mode].run(cell, x, layer_state, training)
            x = self._dropout(x, masks[layer + 1])
            final.append(layer_final)
        # [batch, num_steps, hidden]: transpose the small tensor, not the logits.
        return tf.transpose(x, [1, 0, 2]), tuple(final)

    def __call__(self, inputs, state, training=False, seed=None, keep_masks=None):
        """Returns (logits float32 [batch_size, num_steps, vocab_size], final state)."""
        outputs, final = self.hidden(inputs, state, training, seed, keep_masks)
        return self.project(outputs), final

    def project(self, outputs):
        """Softmax logits of hidden outputs: [..., hidden_size] -> [..., vocab_size]."""
        return tf.tensordot(outputs, self.softmax_w, 1) + self.softmax_b


def sequence_cost(logits, targets):
    """The tutorial's cost: cross-entropy summed over time steps, averaged over the batch.

    Args:
      logits: float32 [batch_size, num_steps, vocab_size].
      targets: int32 [batch_size, num_steps].
    Returns:
      float32 scalar. (With learning rate 1.0 this scale matters: it is what the
      gradients are of.)
    """
    losses = word_losses(logits, targets)
    return tf.reduce_sum(losses) / tf.cast(tf.shape(targets)[0], losses.dtype)


def word_losses(logits, targets):
    """-log softmax(logits)[target] at every position: float32, the shape of targets.

    The value of tf.nn.sparse_softmax_cross_entropy_with_logits, in the form that
    compiles cheapest: logsumexp(logits) minus the gathered target logit, and a
    hand-written gradient (softmax - one_hot). The stock op, under XLA, becomes a
    one-hot product and a sum over the whole [words, vocab] matrix.

    Args:
      logits: float32 [..., vocab_size].
      targets: int32 [...], each in [0, vocab_size).
    """
    return _word_losses(tf.convert_to_tensor(logits), tf.convert_to_tensor(targets))


@tf.custom_gradient
def _word_losses(logits, targets):
    shift = tf.reduce_max(logits, axis=-1, keepdims=True)           # [..., 1]
    exp = tf.exp(logits - shift)                                     # [..., vocab]
    total = tf.reduce_sum(exp, axis=-1, keepdims=True)               # [..., 1]
    lse = tf.squeeze(shift + tf.math.log(total), -1)                 # [...]
    target_logit = tf.gather(logits, targets, batch_dims=targets.shape.rank)

    def grad(dlosses):
        # d loss / d logits = softmax(logits) - one_hot(target), from the kept exp.
        dlosses = dlosses[..., None]                                 # [..., 1]
        one_hot = tf.one_hot(targets, tf.shape(logits)[-1], dtype=logits.dtype)
        return exp * (dlosses / total) - one_hot * dlosses, None
    return lse - target_logit, grad
