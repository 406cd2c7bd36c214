"""A trained model at work: evaluate a file, generate text, score lines (checkpoints.load_model loads it)."""

import collections
import functools
import math
import os
import select
import stat
import sys

import numpy as np
import tensorflow as tf

import errors
import reader
import training


class InferenceError(errors.UserError, ValueError):
    """A file, vocabulary or argument the user gave cannot be used; one line says why."""


def evaluate_file(model, word_to_id, path, jit_compile=False, own_file=False):
    """The exact perplexity of a text file: one stream (batch 1), state carried throughout.

    Lines end in <eos>, as in training; words outside the vocabulary are read as <unk>.
    jit_compile: run under XLA (see training.stream_log_probs). own_file: the user's own
    text (--eval_data=FILE), not a split of the data, for the error messages.

    Returns:
      (perplexity float, number of words incl. <eos>, number read as <unk>).
    Raises:
      reader.DataError: missing, empty or non-UTF-8 file; unknown words and no <unk>.
    """
    words = (reader.read_words(path, "--eval_data file", "pass a text file with words in it")
             if own_file else reader.read_words(path))
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
    temperature float64 [], top_k int32 [] (0: off), seed int64 [2]) ->
    (next id int32 [], final state). The same (seed, ids, state) give the
    same word: the draw is a stateless op.

    The logits are shifted so the largest is 0 before they are divided by the
    temperature, in float64: softmax is unchanged by the shift, and the
    quotients are <= 0, so no temperature > 0 overflows them. A tiny one
    (float32 would make 1e-39 infinite and 1e-46 zero) drives every word but
    the most likely to -inf: the draw becomes greedy, the limit of T -> 0.
    """
    vocab_size = model.vocab_size
    state_spec = tf.nest.map_structure(tf.TensorSpec.from_tensor, model.zero_state(1))

    @tf.function(input_signature=[
        tf.TensorSpec([1, None], tf.int32), state_spec, tf.TensorSpec([], tf.float64),
        tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int64)])
    def sample_step(ids, state, temperature, top_k, seed):
        outputs, final = model.hidden(ids, state, training=False)
        logits = tf.cast(model.project(outputs[:, -1]), tf.float64)  # [1, vocab]
        logits = (logits - tf.reduce_max(logits, axis=-1, keepdims=True)) / temperature

        def keep_top_k():
            kth = tf.math.top_k(logits, k=tf.minimum(top_k, vocab_size)).values[:, -1:]
            return tf.where(logits < kth, tf.constant(-np.inf, logits.dtype), logits)

        logits = tf.cond(top_k > 0, keep_top_k, lambda: logits)
        next_id = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)
        return next_id[0, 0], final
    return sample_step


def generate(model, word_to_id, prompt_words=(), num_words=50, temperature=1.0, top_k=0,
             seed=0, stop_at_eos=True, sample_step=None):
    """sampled_words' words as a list."""
    return list(sampled_words(model, word_to_id, prompt_words, num_words, temperature, top_k,
                              seed, stop_at_eos, sample_step))


def sampled_words(model, word_to_id, prompt_words=(), num_words=50, temperature=1.0, top_k=0,
                  seed=0, stop_at_eos=True, sample_step=None):
    """Samples a continuation of `<eos> prompt_words`, a word at a time as it is drawn.

    The model reads the prompt as the start of a sentence (after <eos>, as PTB
    lines are modelled), all of it in one call with the state carried, then
    samples one word at a time. Draw i uses the stateless seed (seed, i), so
    the same arguments give the same words on the same machine.

    Args:
      model: a PTBModel.
      word_to_id: its vocabulary (must hold <eos>).
      prompt_words: sequence of str; words outside the vocabulary are read as <unk>.
      num_words: at most this many words are sampled, > 0.
      temperature: logits are divided by it before sampling, > 0; a tiny one
        (below ~1e-30) samples greedily, see make_sample_step.
      top_k: sample among the k most likely words only; 0 samples from all.
      seed: int.
      stop_at_eos: stop at the first sampled <eos> (not included in the result).
      sample_step: optional make_sample_step(model), to reuse one trace.
    Returns:
      an iterator of the sampled words (str; <eos> marks line ends when stop_at_eos is
      False).
    Raises (at the call, before any word):
      InferenceError: bad num_words, temperature or top_k; no <eos> in the vocabulary.
      reader.DataError: unknown prompt words and no <unk> in the vocabulary.
    """
    check_sampling(num_words, temperature, top_k)
    if reader.EOS not in word_to_id:
        raise InferenceError(f"the vocabulary has no {reader.EOS}, which starts every prompt")
    ids = reader.words_to_ids([reader.EOS] + list(prompt_words), word_to_id, source="prompt")
    return _sampling(model, word_to_id, ids, num_words, temperature, top_k, seed, stop_at_eos,
                     sample_step or make_sample_step(model))


def _sampling(model, word_to_id, ids, num_words, temperature, top_k, seed, stop_at_eos, step):
    """sampled_words' draws after `ids` (int32 [time], <eos> and the prompt), checked."""
    id_to_word = sorted(word_to_id, key=word_to_id.__getitem__)
    state = model.zero_state(1)
    x = ids[None, :]
    # TensorFlow flushes subnormal floats to zero: the smallest normal float64 samples the same.
    temperature = tf.constant(max(temperature, np.finfo(np.float64).tiny), tf.float64)
    top_k = tf.constant(min(top_k, model.vocab_size), tf.int32)  # beyond it: all; no wrap
    for position in range(num_words):
        next_id, state = step(x, state, temperature, top_k,
                              tf.constant([seed, position], tf.int64))
        word = id_to_word[int(next_id)]
        if stop_at_eos and word == reader.EOS:
            return
        yield word
        x = tf.reshape(next_id, [1, 1])


def words_to_text(words):
    """Words joined by spaces, each <eos> shown as a line end."""
    return "".join(text_pieces(words))


def text_pieces(words):
    """words_to_text's text a word at a time, for printing words as they come."""
    line_start = True
    for word in words:
        yield "\n" if word == reader.EOS else word if line_start else f" {word}"
        line_start = word == reader.EOS


def sequence_log_probs(model, ids, state=None):
    """log p(ids[:, t + 1] | ids[:, :t + 1]), from `state` (default zero: the start of a text).

    Args:
      ids: int32 [batch, time], time >= 1.
      state: optional, as model.zero_state(batch): the state before ids[:, 0].
    Returns:
      float32 [batch, time - 1]; with `state` given, (that, the state after ids[:, -2]).
    """
    start = model.zero_state(tf.shape(ids)[0]) if state is None else state
    outputs, final = model.hidden(ids[:, :-1], start, training=False)
    log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids[:, 1:],
                                                                logits=model.project(outputs))
    return log_probs if state is None else (log_probs, final)


def read_lines(path):
    """(the lines of a UTF-8 file or of stdin ("-") without their line ends, `waiting`
    for score_lines: None for a file, whose lines are all there).

    Only "\n" ends a line (a CRLF's "\r" is dropped; a lone "\r" is whitespace within
    it, as evaluation reads it); a leading byte order mark is dropped with a warning, as
    the reader does. A pipe's or a terminal's lines are read as they arrive.
    Raises InferenceError, as the lines are read, naming a line that is not UTF-8.
    """
    if path != "-":
        return _decoded(_file_lines(path), path), None
    fd = _fileno(sys.stdin)
    if fd is None or stat.S_ISREG(os.fstat(fd).st_mode):
        return _decoded(sys.stdin.buffer, "stdin"), None
    arriving = _ArrivingLines(fd)
    return _decoded(arriving, "stdin"), arriving.waiting


def _fileno(stream):
    try:
        return stream.fileno()
    except (OSError, ValueError):  # not a real file (a test's stand-in)
        return None


def _file_lines(path):
    with open(path, "rb") as f:
        yield from f


def _decoded(raw_lines, name):
    """Each line of bytes decoded alone (split at b"\n", never inside a UTF-8 sequence),
    so that a bad byte is named by its line."""
    try:
        for number, raw in enumerate(raw_lines, 1):
            try:
                line = raw.decode("utf-8").rstrip("\n").removesuffix("\r")
            except UnicodeDecodeError as e:
                raise InferenceError(f"{name} line {number} is not UTF-8 (byte {raw[e.start]:#04x} "
                                     f"at byte {e.start + 1} of the line); re-encode it as "
                                     f"UTF-8") from None
            yield reader.drop_bom(line, name, "--input") if number == 1 else line
    except OSError as e:
        raise InferenceError(f"cannot read --input {name}: {e.strerror}; pass a readable file, "
                             f"or - for stdin") from None


class _ArrivingLines:
    """The lines (bytes) of a pipe or a terminal, read with os.read as they arrive, so that
    `waiting` can tell, without blocking, whether another is there."""

    def __init__(self, fd):
        self._fd, self._buffer, self._at, self._ended = fd, b"", 0, False

    def __iter__(self):
        pieces = []  # of a line longer than what one read brought
        while True:
            end = self._buffer.find(b"\n", self._at)
            if end >= 0:
                line = b"".join([*pieces, self._buffer[self._at:end + 1]])
                pieces, self._at = [], end + 1  # before the yield: `waiting` reads it
                yield line
                continue
            pieces.append(self._buffer[self._at:])
            self._buffer, self._at = os.read(self._fd, 1 << 16), 0
            if not self._buffer:
                self._ended = True
                if b"".join(pieces):
                    yield b"".join(pieces)  # a last line without its "\n"
                return

    def waiting(self):
        """True if the next line (or the end) can be read without blocking."""
        return (self._ended or b"\n" in self._buffer[self._at:]
                or bool(select.select([self._fd], [], [], 0)[0]))


LineScore = collections.namedtuple("LineScore", ["log_prob", "num_words", "perplexity", "unknown"])
LineScore.__doc__ = """One line's score.

log_prob: natural-log probability of the line's words and its closing <eos>,
  read as a sentence that starts after <eos>.
num_words: the predicted tokens: the line's words plus the closing <eos>.
perplexity: exp(-log_prob / num_words).
unknown: how many of the line's words were read as <unk>.
"""


def score_lines(model, word_to_id, lines, batch_size=64, chunk_len=64, source="input",
                waiting=None):
    """Scores each line independently as one PTB sentence: p(words <eos> | <eos>).

    Lines are scored in batches (padded; padding never reaches an earlier
    position) of at most batch_size lines and batch_size x chunk_len padded
    words (a longer line alone), read chunk_len words at a time with the state
    carried (as training.stream_log_probs does): memory is bounded by
    batch_size x chunk_len x vocab_size floats, not by the longest line. A line
    within one chunk scores exactly as in one call. A blank line scores the
    empty sentence (just its <eos>). The results come out in input order as each
    batch is done; when `waiting` says no further line is there yet, the lines
    read so far are scored, so a pipe or a terminal is answered line by line.
    A line that cannot be read or converted comes after the results of those
    before it.

    Args:
      model: a PTBModel.
      word_to_id: its vocabulary (must hold <eos>).
      lines: iterable of str.
      batch_size: lines per batch.
      chunk_len: words per model call, >= 1.
      source: where the lines come from (a file name, stdin), for error messages.
      waiting: optional callable, whether another line can be read without
        blocking (see read_lines); default: always.
    Yields:
      LineScore per line.
    Raises:
      InferenceError: no <eos> in the vocabulary; chunk_len < 1.
      reader.DataError: unknown words and no <unk> in the vocabulary.
    """
    if reader.EOS not in word_to_id:
        raise InferenceError(f"the vocabulary has no {reader.EOS}, which ends every line")
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 1:
        raise InferenceError(f"chunk_len must be a positive integer, got {chunk_len!r}")
    state_spec = tf.nest.map_structure(
        lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), model.zero_state(1))
    log_probs_of = tf.function(lambda ids, state: sequence_log_probs(model, ids, state),
                               input_signature=[tf.TensorSpec([None, None], tf.int32), state_spec])
    score = functools.partial(_score_batch, model, log_probs_of, word_to_id, chunk_len, source)
    for first, batch in _batches(lines, batch_size, batch_size * chunk_len,
                                 waiting or (lambda: True)):
        yield from score(batch, first)


def _batches(lines, max_lines, max_words, waiting):
    """(number of its first line, the words of each line): batches of at most max_lines
    lines and max_words padded words (a longer line alone), each as soon as no line is
    waiting. An error reading a line comes after the batch of the lines before it."""
    batch, longest, first = [], 0, 1
    try:
        for number, line in enumerate(lines, 1):
            words = line.split()
            if batch and (len(batch) + 1) * max(longest, len(words)) > max_words:
                yield first, batch
                batch, longest, first = [], 0, number
            batch.append(words)
            longest = max(longest, len(words))
            if len(batch) == max_lines or not waiting():
                yield first, batch
                batch, longest, first = [], 0, number + 1
    except Exception:
        if batch:
            yield first, batch
        raise
    if batch:
        yield first, batch


def _score_batch(model, log_probs_of, word_to_id, chunk_len, source, batch, first):
    """LineScores of a batch of lines (lists of words) whose first is line `first` of
    `source`. A word unknown without <unk> is named with its line, after the scores of
    the lines before it."""
    sentences = []
    for row, words in enumerate(batch):
        try:
            sentences.append(reader.words_to_ids([reader.EOS] + words + [reader.EOS],
                                                 word_to_id, source=f"{source} line {first + row}"))
        except reader.DataError:
            yield from _score_batch(model, log_probs_of, word_to_id, chunk_len, source,
                                    batch[:row], first)
            raise
    if not sentences:
        return
    predicted = np.array([len(s) - 1 for s in sentences])  # each line's words and its <eos>
    ids = np.zeros([len(sentences), predicted.max() + 1], np.int32)  # 0 after each end
    for row, sentence in enumerate(sentences):
        ids[row, :len(sentence)] = sentence
    state = model.zero_state(len(sentences))
    log_probs = np.zeros(len(sentences))  # float64 sums
    # Chunk [start, stop) predicts ids[:, start + 1:stop + 1]; its last word starts the next.
    for start in range(0, ids.shape[1] - 1, chunk_len):
        stop = min(start + chunk_len, ids.shape[1] - 1)
        chunk, state = log_probs_of(tf.constant(ids[:, start:stop + 1]), state)
        mine = np.arange(start, stop) < predicted[:, None]  # [batch, stop - start]
        log_probs += np.where(mine, chunk.numpy().astype(np.float64), 0.0).sum(axis=1)
    for words, log_prob, num_words in zip(batch, log_probs, predicted):
        log_prob, num_words = float(log_prob), int(num_words)
        yield LineScore(log_prob, num_words, training.perplexity(-log_prob / num_words),
                        sum(w not in word_to_id for w in words))
