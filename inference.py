"""After training: load a checkpoint's model and vocabulary; evaluate, generate and score text."""

import collections
import glob
import math
import os
import re

import numpy as np
import tensorflow as tf

import checkpoints
import configs
import model as model_lib
import reader
import training
from errors import UserError

VOCAB_FILE = "vocab.txt"
_TRAIN_FIRST = ("train first (python ptb_word_lm.py --save_path=DIR) or pass the --save_path of a "
                "trained run")


class InferenceError(UserError, ValueError):
    """A checkpoint, vocabulary or argument the user gave cannot be used; one line says why."""


def find_checkpoint(save_path, checkpoint=None):
    """The checkpoint prefix to load: `checkpoint` if given, else the newest in save_path.

    Args:
      save_path: a training run's directory (holds ckpt-N.* and vocab.txt).
      checkpoint: optional prefix such as runs/small/ckpt-13 (a trailing .index
        is accepted) or a directory of checkpoints such as runs/small/best.
    Returns:
      str, a prefix that tf.train.load_checkpoint accepts.
    Raises:
      InferenceError: nothing to load there.
    """
    if checkpoint:
        prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", checkpoint)
        if os.path.isdir(prefix):
            found = _newest_in(prefix)
            if not found:
                raise InferenceError(f"no checkpoint in directory {prefix}; pass a prefix such as "
                                     f"{os.path.join(prefix, 'ckpt-1')}")
            return found
        if not os.path.isfile(prefix + ".index"):
            raise InferenceError(f"checkpoint not found: {checkpoint}; pass a prefix such as "
                                 f"runs/small/ckpt-13 (no .index) or a directory such as "
                                 f"runs/small/best")
        return prefix
    if not os.path.isdir(save_path):
        raise InferenceError(f"save_path {save_path} does not exist; {_TRAIN_FIRST}")
    found = _newest_in(save_path)
    if not found:
        raise InferenceError(f"no checkpoint in {save_path}; {_TRAIN_FIRST}")
    return found


def _newest_in(directory):
    """The newest ckpt-N prefix in directory: its `checkpoint` index, else the highest N."""
    listed = tf.train.latest_checkpoint(directory)
    if listed:
        return listed
    numbers = [int(m.group(1)) for m in
               (re.search(r"ckpt-(\d+)\.index$", p)
                for p in glob.glob(os.path.join(directory, "ckpt-*.index"))) if m]
    return os.path.join(directory, f"ckpt-{max(numbers)}") if numbers else None


# What TensorFlow raises for a missing, truncated or corrupt checkpoint file.
_UNREADABLE = (tf.errors.OpError, ValueError, IndexError)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def read_run_info(path):
    """The run_info a checkpoint was saved with: dict with config, seed, vocab_hash.

    Raises:
      InferenceError: unreadable, or not a checkpoint of ptb_word_lm.py.
    """
    try:
        return checkpoints.read_run_info(path)
    except _UNREADABLE as e:
        raise InferenceError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    except KeyError:
        raise InferenceError(f"checkpoint {path} has no run_info: it was not written by "
                             f"ptb_word_lm.py") from None


def _find_vocab(save_path, path, expected_hash):
    """The vocabulary stored beside checkpoint `path`, checked against the checkpoint's hash.

    Looked for in the checkpoint's directory, its parent (for save_path/best/)
    and save_path, in that order.
    """
    directory = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.join(d, VOCAB_FILE)
                  for d in (directory, os.path.dirname(directory), save_path)]
    existing = list(dict.fromkeys(c for c in candidates if os.path.isfile(c)))
    if not existing:
        raise InferenceError(f"no {VOCAB_FILE} beside checkpoint {path} (looked in "
                             f"{os.path.dirname(candidates[0])} and its parent): training writes "
                             f"it into save_path")
    for candidate in existing:
        word_to_id = reader.load_vocab(candidate)
        if reader.vocab_hash(word_to_id) == expected_hash:
            return word_to_id
    raise InferenceError(f"{existing[0]} is not the vocabulary checkpoint {path} was trained "
                         f"with (hash differs); use the vocab.txt of that run")


def load_model(save_path, checkpoint=None, rnn_mode="block"):
    """Rebuilds a trained model from a checkpoint, with its config and vocabulary.

    Only the model's weights are read; the optimizer state, history and carried
    state of the TrainState checkpoint are left unread.

    Args:
      save_path: the training run's directory.
      checkpoint: optional prefix or directory, see find_checkpoint.
      rnn_mode: LSTM implementation; the weights are the same in every mode.
    Returns:
      (model_lib.PTBModel, word_to_id dict, configs.Config).
    Raises:
      InferenceError: no usable checkpoint or vocabulary.
      reader.DataError: the vocabulary file is malformed.
    """
    path = find_checkpoint(save_path, checkpoint)
    run_info = read_run_info(path)
    try:
        config = configs.from_dict(run_info["config"])
    except (KeyError, configs.ConfigError) as e:
        raise InferenceError(f"checkpoint {path} has an unusable config ({e}); use a checkpoint "
                             f"of this version of ptb_word_lm.py") from None
    word_to_id = _find_vocab(save_path, path, run_info.get("vocab_hash"))
    model = model_lib.PTBModel.from_config(config, rnn_mode=rnn_mode)
    # The checkpoint's object graph is Checkpoint(state=TrainState(model=...), ...):
    # mirror just the path to the model.
    try:
        status = tf.train.Checkpoint(state=tf.train.Checkpoint(model=model)).restore(path)
        status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise InferenceError(f"checkpoint {path} does not hold this model's weights: "
                             f"{_first_line(e)}") from None
    except _UNREADABLE as e:
        raise InferenceError(f"cannot read checkpoint {path}: {_first_line(e)}") from None
    return model, word_to_id, config


def evaluate_file(model, word_to_id, path, jit_compile=False):
    """The exact perplexity of a text file: one stream (batch 1), state carried throughout.

    Lines end in <eos>, as in training; words outside the vocabulary are read as <unk>.
    jit_compile: run under XLA (see training.stream_log_probs).

    Returns:
      (perplexity float, number of words incl. <eos>, number read as <unk>).
    Raises:
      reader.DataError: missing, empty or non-UTF-8 file; unknown words and no <unk>.
    """
    words = reader.read_words(path)
    if len(words) < 2:
        raise InferenceError(f"{path} has a single word; perplexity needs at least two")
    ids = reader.words_to_ids(words, word_to_id, source=path)
    unknown = sum(w not in word_to_id for w in words)
    return training.stream_perplexity(model, ids, jit_compile=jit_compile), len(words), unknown


def check_sampling(num_words, temperature, top_k):
    """Raises InferenceError for sampling settings that cannot work."""
    if isinstance(num_words, bool) or not isinstance(num_words, int) or num_words <= 0:
        raise InferenceError(f"num_words must be a positive integer, got {num_words!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
            and temperature > 0):
        raise InferenceError(f"temperature must be > 0 (1.0 samples the model as it is, lower "
                             f"is greedier), got {temperature!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise InferenceError(f"top_k must be an integer >= 0 (0: no cut-off), got {top_k!r}")


def unknown_words(words, word_to_id):
    """The distinct words not in the vocabulary, in order of first appearance."""
    return list(dict.fromkeys(w for w in words if w not in word_to_id))


def make_sample_step(model):
    """A tf.function that reads words and samples the next one; traced once for any length.

    Signature: (ids int32 [1, time >= 1], state as model.zero_state(1),
    temperature float32 [], top_k int32 [] (0: off), seed int64 [2]) ->
    (next id int32 [], final state). The same (seed, ids, state) give the
    same word: the draw is a stateless op.
    """
    vocab_size = model.vocab_size
    state_spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, model.zero_state(1))

    @tf.function(input_signature=[
        tf.TensorSpec([1, None], tf.int32), state_spec, tf.TensorSpec([], tf.float32),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64)])
    def sample_step(ids, state, temperature, top_k, seed):
        outputs, final = model.hidden(ids, state, training=False)
        logits = model.project(outputs[:, -1]) / temperature  # [1, vocab]

        def keep_top_k():
            kth = tf.math.top_k(logits, k=tf.minimum(top_k, vocab_size)).values[:, -1:]
            return tf.where(logits < kth, tf.constant(-np.inf, logits.dtype), logits)

        logits = tf.cond(top_k > 0, keep_top_k, lambda: logits)
        next_id = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)
        return next_id[0, 0], final
    return sample_step


def generate(model, word_to_id, prompt_words=(), num_words=50, temperature=1.0, top_k=0,
             seed=0, stop_at_eos=True, sample_step=None):
    """Samples a continuation of `<eos> prompt_words`.

    The model reads the prompt as the start of a sentence (after <eos>, as PTB
    lines are modelled), all of it in one call with the state carried, then
    samples one word at a time. Draw i uses the stateless seed (seed, i), so
    the same arguments give the same words on the same machine.

    Args:
      model: a PTBModel.
      word_to_id: its vocabulary (must hold <eos>).
      prompt_words: sequence of str; words outside the vocabulary are read as <unk>.
      num_words: at most this many words are sampled, > 0.
      temperature: logits are divided by it before sampling, > 0.
      top_k: sample among the k most likely words only; 0 samples from all.
      seed: int.
      stop_at_eos: stop at the first sampled <eos> (not included in the result).
      sample_step: optional make_sample_step(model), to reuse one trace.
    Returns:
      list[str] of the sampled words (<eos> marks line ends when stop_at_eos is False).
    Raises:
      InferenceError: bad num_words, temperature or top_k; no <eos> in the vocabulary.
      reader.DataError: unknown prompt words and no <unk> in the vocabulary.
    """
    check_sampling(num_words, temperature, top_k)
    if reader.EOS not in word_to_id:
        raise InferenceError(f"the vocabulary has no {reader.EOS}, which starts every prompt")
    id_to_word = sorted(word_to_id, key=word_to_id.__getitem__)
    ids = reader.words_to_ids([reader.EOS] + list(prompt_words), word_to_id, source="prompt")
    step = sample_step or make_sample_step(model)
    state = model.zero_state(1)
    x = ids[None, :]
    temperature = tf.constant(temperature, tf.float32)
    top_k = tf.constant(top_k, tf.int32)
    words = []
    for position in range(num_words):
        next_id, state = step(x, state, temperature, top_k,
                              tf.constant([seed, position], tf.int64))
        word = id_to_word[int(next_id)]
        if stop_at_eos and word == reader.EOS:
            break
        words.append(word)
        x = tf.reshape(next_id, [1, 1])
    return words


def words_to_text(words):
    """Words joined by spaces, each <eos> shown as a line end."""
    lines = [[]]
    for word in words:
        if word == reader.EOS:
            lines.append([])
        else:
            lines[-1].append(word)
    return "\n".join(" ".join(line) for line in lines)


def sequence_log_probs(model, ids):
    """log p(ids[:, t + 1] | ids[:, :t + 1]) from the zero state (the start of a text).

    Args:
      ids: int32 [batch, time], time >= 1.
    Returns:
      float32 [batch, time - 1].
    """
    state = model.zero_state(tf.shape(ids)[0])
    outputs, _ = model.hidden(ids[:, :-1], state, training=False)
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[:, 1:],
                                                           logits=model.project(outputs))


LineScore = collections.namedtuple("LineScore", ["log_prob", "num_words", "perplexity", "unknown"])
LineScore.__doc__ = """One line's score.

log_prob: natural-log probability of the line's words and its closing <eos>,
  read as a sentence that starts after <eos>.
num_words: the predicted tokens: the line's words plus the closing <eos>.
perplexity: exp(-log_prob / num_words).
unknown: how many of the line's words were read as <unk>.
"""


def score_lines(model, word_to_id, lines, batch_size=64):
    """Scores each line independently as one PTB sentence: p(words <eos> | <eos>).

    Lines are scored batch_size at a time (padded; padding never reaches an
    earlier position), and the results come out in input order as each batch
    is done, so stdin can stream through. A blank line scores the empty
    sentence (just its <eos>).

    Args:
      model: a PTBModel.
      word_to_id: its vocabulary (must hold <eos>).
      lines: iterable of str.
    Yields:
      LineScore per line.
    Raises:
      InferenceError: no <eos> in the vocabulary.
      reader.DataError: unknown words and no <unk> in the vocabulary.
    """
    if reader.EOS not in word_to_id:
        raise InferenceError(f"the vocabulary has no {reader.EOS}, which ends every line")
    log_probs_of = tf.function(lambda ids: sequence_log_probs(model, ids),
                               input_signature=[tf.TensorSpec([None, None], tf.int32)])
    batch = []
    for line in lines:
        batch.append(line.split())
        if len(batch) == batch_size:
            yield from _score_batch(log_probs_of, word_to_id, batch)
            batch = []
    if batch:
        yield from _score_batch(log_probs_of, word_to_id, batch)


def _score_batch(log_probs_of, word_to_id, batch):
    sentences = [reader.words_to_ids([reader.EOS] + words + [reader.EOS], word_to_id)
                 for words in batch]
    time = max(len(s) for s in sentences)
    ids = np.zeros([len(sentences), time], np.int32)  # pad with id 0 after each sentence's end
    for row, sentence in enumerate(sentences):
        ids[row, :len(sentence)] = sentence
    log_probs = log_probs_of(tf.constant(ids)).numpy().astype(np.float64)
    for row, (words, sentence) in enumerate(zip(batch, sentences)):
        num_words = len(sentence) - 1
        log_prob = float(log_probs[row, :num_words].sum())
        yield LineScore(log_prob, num_words, math.exp(-log_prob / num_words),
                        sum(w not in word_to_id for w in words))
