"""PTBModel: the paper's embedding -> stacked LSTM -> softmax word model, and its cost."""

from typing import NamedTuple

import tensorflow as tf

import precision as precision_lib
from rnn import cells
from rnn import kernels

# The recurrent cell of each configs.CELLS name; the tutorial's LSTM has forget bias 0.
_CELLS = {
    "lstm": lambda hidden, init, name: cells.LSTMCell(
        hidden, hidden, forget_bias=0.0, kernel_initializer=init, name=name),
    "gru": lambda hidden, init, name: cells.GRUCell(
        hidden, hidden, kernel_initializer=init, name=name),
    "rnn": lambda hidden, init, name: cells.BasicRNNCell(
        hidden, hidden, kernel_initializer=init, name=name),
}
# Seed streams of the masks beyond the tutorial's: site streams are 0..num_layers.
_RECURRENT_STREAM, _WEIGHT_STREAM, _EMBEDDING_STREAM = 1 << 20, 2 << 20, 3 << 20


def _uniform(init_scale, seed):
    """A seeded initializer uniform in [-init_scale, init_scale]; variable k gets seed (seed, k)."""
    counter = iter(range(1 << 30))

    def initializer(shape, dtype=tf.float32):
        return tf.random.stateless_uniform(
            shape, seed=[seed, next(counter)], minval=-init_scale, maxval=init_scale, dtype=dtype)
    return initializer


class KeepMasks(NamedTuple):
    """The keep masks (bool) of one training batch with the regularisation beyond the tutorial.

    Per row of the batch (mask_rows slices them):
      sites: one per dropout site (the embeddings, then each layer's output):
        [num_steps, batch_size, hidden_size], or [batch_size, hidden_size]
        held over the steps with variational_dropout; () when keep_prob is 1.
      recurrent: one per layer, [batch_size, hidden_size]: h_{t-1} before
        W_h at every step (recurrent_keep_prob < 1); else ().
    Per batch (mask_rows keeps them whole):
      weights: one per layer, the cell's recurrent_shape ([hidden_size,
        4 * hidden_size] for an LSTM): weight drop (weight_drop < 1); else ().
      embedding: ([vocab_size],): whole embedding rows, one per word type
        (embedding_dropout < 1); else ().
    """

    sites: tuple = ()
    recurrent: tuple = ()
    weights: tuple = ()
    embedding: tuple = ()


class PTBModel(tf.Module):
    """Embedding [vocab, hidden] -> num_layers LSTMs -> softmax [hidden, vocab].

    As in the tutorial: every weight starts uniform in [-init_scale, init_scale]
    (the LSTM biases start at zero, as the tutorial's LSTM cells did; a GRU's, beyond
    the tutorial, as TF1's GRUCell: gate biases 1.0, candidate 0), the LSTM
    forget bias is 0.0, and dropout (keep_prob) is applied to the embeddings
    and to every layer's output when training. The variables are the same in
    every rnn_mode, so a checkpoint moves between modes.

    Beyond the tutorial (configs.Config says what each option is; every default
    is the tutorial's model, with the same variables, seeds and masks): a GRU
    or plain RNN cell, tied embeddings (no softmax_w: the logits use the
    embedding's transpose), variational dropout with a recurrent mask,
    embedding dropout and weight drop. Every mask is drawn by dropout_masks
    from a seed and handed back to the model, as the tutorial's are.
    """

    def __init__(self, vocab_size, hidden_size, num_layers, init_scale, keep_prob=1.0,
                 rnn_mode="auto", seed=0, name="ptb_model", cell="lstm", tie_embeddings=False,
                 variational_dropout=False, recurrent_keep_prob=1.0, embedding_dropout=1.0,
                 weight_drop=1.0, precision=precision_lib.FLOAT32):
        super().__init__(name=name)
        if cell not in _CELLS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(_CELLS)}")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.keep_prob = keep_prob
        self.cell = cell
        self.tie_embeddings = tie_embeddings
        self.variational_dropout = variational_dropout
        self.recurrent_keep_prob = recurrent_keep_prob
        self.embedding_dropout = embedding_dropout
        self.weight_drop = weight_drop
        self.rnn_mode = kernels.resolve(rnn_mode, cell=cell,
                                        recurrent_mask=recurrent_keep_prob < 1.0)
        # The training pass's products over all time steps in bfloat16 (precision.py);
        # forward-only passes stay float32.
        precision_lib.check(precision, self.rnn_mode)
        self.precision = precision
        init = _uniform(init_scale, seed)
        with self.name_scope:
            self.embedding = tf.Variable(init([vocab_size, hidden_size]), name="embedding")
            self.cells = [_CELLS[cell](hidden_size, init, f"{cell}_{layer}")
                          for layer in range(num_layers)]
            # Tied: the logits use the embedding's transpose, so there is no softmax_w.
            self.softmax_w = (None if tie_embeddings else
                              tf.Variable(init([hidden_size, vocab_size]), name="softmax_w"))
            self.softmax_b = tf.Variable(init([vocab_size]), name="softmax_b")

    @classmethod
    def from_config(cls, config, rnn_mode="auto", seed=0, precision=precision_lib.FLOAT32,
                    for_training=True):
        """The model of `config`. for_training=False leaves out what only training uses (the
        dropouts, weight drop): the same variables and the same function at evaluation, on
        any kernel, including those that cannot drop the recurrent h (block, cudnn)."""
        training_only = dict(keep_prob=config.keep_prob, precision=precision,
                             variational_dropout=config.variational_dropout,
                             recurrent_keep_prob=config.recurrent_keep_prob,
                             embedding_dropout=config.embedding_dropout,
                             weight_drop=config.weight_drop) if for_training else {}
        return cls(config.vocab_size, config.hidden_size, config.num_layers, config.init_scale,
                   rnn_mode=rnn_mode, seed=seed, cell=config.cell,
                   tie_embeddings=config.tie_embeddings, **training_only)

    def zero_state(self, batch_size):
        """A tuple of num_layers states: LSTMStateTuple(c, h) for an LSTM, h for a GRU or an
        RNN, each float32 [batch_size, hidden_size]."""
        return tuple(cell.zero_state(batch_size, tf.float32) for cell in self.cells)

    @property
    def uses_dropout(self):
        return self.keep_prob < 1.0 or self._beyond_tutorial

    @property
    def _beyond_tutorial(self):
        """Whether training draws masks the tutorial's dropout did not (then as KeepMasks)."""
        return ((self.variational_dropout and self.keep_prob < 1.0)
                or self.recurrent_keep_prob < 1.0 or self.embedding_dropout < 1.0
                or self.weight_drop < 1.0)

    def dropout_masks(self, seed, batch_size, num_steps):
        """The keep masks of one training batch.

        The tutorial's dropout: a tuple of bool [num_steps, batch_size,
        hidden_size], one per dropout site (the embeddings, then each layer's
        output). With variational dropout, embedding dropout or weight drop: a
        KeepMasks (see there for its masks' shapes).

        Stateless: they depend only on `seed` (int [2]) and the site, so a resumed
        run draws exactly the masks an uninterrupted one would. Drawn with Philox
        as tf.nn.experimental.stateless_dropout draws them; the step function
        draws them outside XLA, whose Philox is slower and draws other numbers.
        """
        # One mask per row and site held over the steps, or a fresh one every step.
        site_shape = ([batch_size, self.hidden_size] if self.variational_dropout
                      else [num_steps, batch_size, self.hidden_size])
        sites = tuple(_keep_mask(seed, site, site_shape, self.keep_prob)
                      for site in range(self.num_layers + 1)) if self.keep_prob < 1.0 else ()
        if not self._beyond_tutorial:
            return sites
        layers = range(self.num_layers)
        return KeepMasks(
            sites=sites,
            recurrent=tuple(
                _keep_mask(seed, _RECURRENT_STREAM + layer, [batch_size, self.hidden_size],
                           self.recurrent_keep_prob)
                for layer in layers) if self.recurrent_keep_prob < 1.0 else (),
            weights=tuple(
                _keep_mask(seed, _WEIGHT_STREAM + layer, self.cells[layer].recurrent_shape,
                           self.weight_drop)
                for layer in layers) if self.weight_drop < 1.0 else (),
            embedding=(_keep_mask(seed, _EMBEDDING_STREAM, [self.vocab_size],
                                  self.embedding_dropout),)
            if self.embedding_dropout < 1.0 else ())

    @staticmethod
    def mask_rows(keep_masks, start, stop):
        """The masks of batch rows [start, stop) out of dropout_masks(...) of the whole batch.

        A data-parallel replica that owns those rows draws the whole batch's
        masks and keeps its rows, so it drops exactly what one device would.
        Per-row masks are sliced by rows; the per-batch ones of KeepMasks
        (weight drop, embedding dropout) are kept whole: every replica drops
        the same weights and words.
        """
        if not isinstance(keep_masks, KeepMasks):
            return tuple(mask[:, start:stop] for mask in keep_masks)  # [T, rows, H] each
        return keep_masks._replace(
            # [T, rows, H], or [rows, H] for variational masks held over time
            sites=tuple(mask[:, start:stop] if mask.shape.rank == 3 else mask[start:stop]
                        for mask in keep_masks.sites),
            recurrent=tuple(mask[start:stop] for mask in keep_masks.recurrent))  # [rows, H]

    def _dropout(self, x, keep):
        if keep is None:
            return x
        # stateless_dropout's arithmetic: x / keep_prob where kept, else 0. A variational
        # keep [batch, hidden] broadcasts over the steps of x [steps, batch, hidden].
        scale = tf.constant(1 / (1 - (1.0 - self.keep_prob)), x.dtype)
        return tf.where(keep, x * scale, tf.zeros([], x.dtype))

    def _training_masks(self, inputs, training, seed, keep_masks):
        """The masks this call applies, as KeepMasks (all empty when not training)."""
        if not (training and self.uses_dropout):
            return KeepMasks()
        if keep_masks is None and seed is None:
            raise ValueError("training with dropout needs a seed")
        if keep_masks is None:
            batch_size, num_steps = tf.unstack(tf.shape(inputs))
            keep_masks = self.dropout_masks(seed, batch_size, num_steps)
        return keep_masks if isinstance(keep_masks, KeepMasks) else KeepMasks(sites=keep_masks)

    def _embed(self, inputs, masks):
        """Embedding rows of inputs [batch, steps] -> float32 [steps, batch, hidden], time-major."""
        ids = tf.transpose(inputs)
        x = tf.nn.embedding_lookup(self.embedding, ids)
        if masks.embedding:
            # Whole rows dropped, kept ones scaled: the lookup of (embedding * row_scale[:, None]),
            # done on the looked-up rows only, so the gradient stays sparse.
            row_scale = _scaled(masks.embedding[0], self.embedding_dropout, x.dtype)  # [vocab]
            x = x * tf.gather(row_scale, ids)[..., None]
        return x

    def hidden(self, inputs, state, training=False, seed=None, keep_masks=None):
        """The last layer's outputs, before the softmax.

        Args:
          inputs: int32 [batch_size, num_steps] word ids.
          state: as zero_state(batch_size): the state after the previous batch.
          training: apply dropout (when keep_prob < 1).
          seed: int [2] seed of the dropout masks; with dropout, it or keep_masks
            is required.
          keep_masks: dropout_masks(seed, batch_size, num_steps), drawn beforehand
            (or their mask_rows for this call's rows).
        Returns:
          (outputs float32 [batch_size, num_steps, hidden_size], final state).
        """
        masks = self._training_masks(inputs, training, seed, keep_masks)
        sites = masks.sites or (None,) * (self.num_layers + 1)
        # [num_steps, batch, hidden], time-major: what the fused kernels take.
        x = self._dropout(self._embed(inputs, masks), sites[0])
        final = []
        for layer, (cell, layer_state) in enumerate(zip(self.cells, state, strict=True)):
            recurrent_mask = weight_mask = None
            if masks.recurrent:
                recurrent_mask = _scaled(masks.recurrent[layer], self.recurrent_keep_prob, x.dtype)
            if masks.weights:
                weight_mask = _scaled(masks.weights[layer], self.weight_drop, x.dtype)
            x, layer_final = kernels.KERNELS[self.rnn_mode].run(
                cell, x, layer_state, training, recurrent_mask=recurrent_mask,
                weight_mask=weight_mask, **self._products(training))
            x = self._dropout(x, sites[layer + 1])
            final.append(layer_final)
        # [batch, num_steps, hidden]: transpose the small tensor, not the logits.
        return tf.transpose(x, [1, 0, 2]), tuple(final)

    def _products(self, training):
        """The kernel's keywords for the training pass: its products in self.precision."""
        if training and self.precision != precision_lib.FLOAT32:
            return {"matmul": precision_lib.matmul}
        return {}

    def __call__(self, inputs, state, training=False, seed=None, keep_masks=None):
        """Returns (logits float32 [batch_size, num_steps, vocab_size], final state)."""
        outputs, final = self.hidden(inputs, state, training, seed, keep_masks)
        return self.project(outputs, training), final

    def project(self, outputs, training=False):
        """Softmax logits of hidden outputs: [..., hidden_size] -> [..., vocab_size].

        training: the product in self.precision (float32 otherwise).
        """
        return self.softmax_product(outputs, training) + self.softmax_b

    def word_losses(self, outputs, targets, training=False):
        """Per-word losses float32 [...] of hidden outputs [..., hidden_size] and targets [...].

        word_losses(self.project(outputs, training), targets), with the bias added
        inside the loss's passes (biased_word_losses): one pass over [words, vocab]
        fewer.
        """
        return biased_word_losses(self.softmax_product(outputs, training), self.softmax_b,
                                  targets)

    def softmax_product(self, outputs, training=False):
        """outputs [..., hidden_size] @ the softmax weights -> [..., vocab_size], no bias.

        training: the product in self.precision (float32 otherwise).
        """
        matmul = self._products(training).get("matmul", tf.matmul)
        # One [words, hidden] x [hidden, vocab] product. Tied: x [vocab, hidden]^T, so
        # the [vocab, hidden] matrix is read in place (no transposed copy, no batched matmul).
        flat = tf.reshape(outputs, [-1, self.hidden_size])
        if self.softmax_w is not None:
            product = matmul(flat, self.softmax_w)
        else:
            product = matmul(flat, self.embedding, transpose_b=True)
        shape = tf.concat([tf.shape(outputs)[:-1], [self.vocab_size]], axis=0)
        return tf.ensure_shape(tf.reshape(product, shape),
                               outputs.shape[:-1] + [self.vocab_size])


def _keep_mask(seed, stream, shape, keep_prob):
    """bool `shape`, True with probability keep_prob, from stream `stream` of stateless `seed`."""
    stream_seed = tf.random.experimental.stateless_fold_in(seed, stream, alg="philox")
    uniform = tf.random.stateless_uniform(shape, seed=stream_seed, alg="philox")
    return uniform >= 1.0 - keep_prob


def _scaled(keep, keep_prob, dtype):
    """bool keep mask -> float 0 or 1/keep_prob (inverted dropout: no rescaling at test time)."""
    return tf.cast(keep, dtype) * tf.constant(1 / keep_prob, dtype)


def resolve_rnn_mode(config, rnn_mode="auto"):
    """The kernel that runs config's model (a name of rnn/kernels.py's table) for rnn_mode.

    "auto" picks by the config's cell and recurrent dropout (basic for a GRU or
    RNN cell); PTBModel resolves the same way, so the run and the driver report
    the kernel the model runs.

    Raises:
      kernels.UnsupportedError: rnn_mode cannot run the cell or the recurrent mask.
      kernels.NoGPUError, ValueError: as kernels.resolve.
    """
    return kernels.resolve(rnn_mode, cell=config.cell,
                           recurrent_mask=config.recurrent_keep_prob < 1.0)


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


# The largest spread of the bias (max - min) for which biased_word_losses shifts by its
# bound. The bound then lies at most 50 above a row's max, so every term within
# 87.3 - 50 of that max stays a normal float32 (below exp(-87.3) TF flushes it to 0),
# and the terms lost are each under exp(-37.3) of the largest: even 10^5 of them
# (ln 10^5 = 11.5) sum to under exp(-25.8), below float32 rounding of the sum (2^-24 =
# exp(-16.6)). Past about 60 they could reach that rounding.
_MAX_BOUNDED_SPREAD = 50.0


def biased_word_losses(logits, bias, targets):
    """word_losses(logits + bias, targets), without writing logits + bias out.

    Under XLA the max and the sum over the vocabulary run as YNNPACK reductions,
    which read a materialized array, so `logits + bias` cost a pass of its own
    over [words, vocab] (1.1 ms of small's 20 ms evaluation step). Here the shift
    is max(logits) + max(bias), a bound of every row's max(logits + bias) that
    needs no such array, and the add fuses into the exponentials' pass. The bound
    exceeds a row's max by at most the spread of the bias (max - min), a few units
    in a trained PTB model; past _MAX_BOUNDED_SPREAD the small terms of the sum
    could underflow, and the shift is the exact max. The values and gradients are
    word_losses' to float32 rounding; the bias's gradient is the logits' summed
    over the words.

    Args:
      logits: float32 [..., vocab_size], without the bias.
      bias: float32 [vocab_size].
      targets: int32 [...], each in [0, vocab_size).
    """
    return _biased_word_losses(*(tf.convert_to_tensor(t) for t in (logits, bias, targets)))


@tf.custom_gradient
def _word_losses(logits, targets):
    shift = tf.reduce_max(logits, axis=-1, keepdims=True)           # [..., 1]
    exp = tf.exp(logits - shift)                                     # [..., vocab]
    target_logit = tf.gather(logits, targets, batch_dims=targets.shape.rank)
    losses, d_logits = _losses_and_gradient(exp, shift, target_logit, targets)
    return losses, lambda dlosses: (d_logits(dlosses), None)


@tf.custom_gradient
def _biased_word_losses(logits, bias, targets):
    """biased_word_losses on tensors: (losses, grad) with d bias = d logits summed over words."""
    def bounded():
        shift = tf.reduce_max(logits, axis=-1, keepdims=True) + tf.reduce_max(bias)
        return tf.exp(logits + (bias - shift)), shift

    def exact():
        biased = logits + bias
        shift = tf.reduce_max(biased, axis=-1, keepdims=True)
        return tf.exp(biased - shift), shift

    # Each branch computes its own exponentials, so XLA writes them straight
    # into the conditional's result. A NaN bias fails the test and takes the exact
    # branch (either branch gives NaN losses).
    exp, shift = tf.cond(tf.reduce_max(bias) - tf.reduce_min(bias) <= _MAX_BOUNDED_SPREAD,
                         bounded, exact)                             # [..., vocab], [..., 1]
    target_logit = (tf.gather(logits, targets, batch_dims=targets.shape.rank)
                    + tf.gather(bias, targets))
    losses, d_logits = _losses_and_gradient(exp, shift, target_logit, targets)

    def grad(dlosses):
        d = d_logits(dlosses)
        return d, tf.reduce_sum(d, axis=list(range(d.shape.rank - 1))), None
    return losses, grad


def _losses_and_gradient(exp, shift, target_logit, targets):
    """(losses [...], dlosses -> d losses / d logits [..., vocab]) from exp(logits - shift)."""
    total = tf.reduce_sum(exp, axis=-1, keepdims=True)               # [..., 1]
    lse = tf.squeeze(shift + tf.math.log(total), -1)                 # [...]

    def d_logits(dlosses):
        # softmax(logits) - one_hot(target), from the kept exp.
        dlosses = dlosses[..., None]                                 # [..., 1]
        one_hot = tf.one_hot(targets, tf.shape(exp)[-1], dtype=exp.dtype)
        return exp * (dlosses / total) - one_hot * dlosses
    return lse - target_logit, d_logits
