"""Owns PTB text -> word ids -> [batch_size, num_steps] (x, y) batches, state carried across."""

import collections
import dataclasses
import functools
import hashlib
import numbers
import os
import sys

import numpy as np
import tensorflow as tf

import files
from errors import UserError

DEFAULT_DATA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ptb")
EOS = "<eos>"
UNK = "<unk>"

_DATA_FIX = "run scripts/get_ptb.sh or pass the right data path"
_OOV_SHOWN = 5  # how many unknown words an error message lists
BOM = "\ufeff"  # the UTF-8 byte order mark some editors put first

# scripts/get_ptb.sh writes this file beside the PTB files it has verified.
PTB_VERIFIED_MARKER = ".ptb_verified"
# Mikolov's PTB files: size in bytes, SHA-256 of the whole file and of its
# first _PTB_HEAD_LEN bytes (what a truncated copy still has).
_PTB_HEAD_LEN = 64
_PTB_FILES = {
    "ptb.train.txt": (5101618,
                      "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
                      "09b1c91a2d9add49b8cb4d5af6125b63dfd48ee400e62b850f92b68cf59e4aeb"),
    "ptb.valid.txt": (399782,
                      "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
                      "0dca59c1e5b8f784a7eaf79d811429f0bdfe4f5b29fb25f9482a01e700d6e0fe"),
    "ptb.test.txt": (449945,
                     "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
                     "850ec148ee6be7be751279cab63a3ae7b18e789523d87782aa36df0f0125c321"),
}


class DataError(UserError, ValueError):
    """Bad or missing data; the message is one line naming the problem and the fix."""


class UnknownWords(DataError):
    """Words a vocabulary without <unk> does not hold: text that is not the vocabulary's."""


def readable_file(path):
    """Whether path is a file to read: a regular one, or a pipe such as /dev/stdin."""
    return os.path.exists(path) and not os.path.isdir(path)


def _read_bytes(path, what="data file", fix=_DATA_FIX):
    """Returns the bytes of a file.

    Raises:
      DataError: the file is missing, unreadable or empty.
    """
    if not readable_file(path):
        raise DataError(f"{what} not found: {path}; {fix}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:  # permissions, an I/O error
        raise DataError(f"cannot read {what} {path}: {e.strerror}; {fix}") from None
    if not raw:
        raise DataError(f"{what} is empty: {path}; {fix}")
    return raw


def _decode(raw, path, what="data file"):
    """Returns raw as UTF-8 text, without a leading byte order mark (said on stderr).

    Raises:
      DataError: raw is not UTF-8 (naming the byte offset).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{what} is not UTF-8: {path}: byte {raw[e.start]:#04x} at offset "
                        f"{e.start}; re-encode it as UTF-8") from e
    return drop_bom(text, path, what)


def drop_bom(text, path, what="data file"):
    """text without a leading UTF-8 byte order mark, said on stderr naming the file.

    Kept, it would silently glue itself to the first word (a new vocabulary entry, an
    unknown word).
    """
    if not text.startswith(BOM):
        return text
    print(f"warning: {what} starts with a UTF-8 byte order mark (BOM), ignored: {path}",
          file=sys.stderr)
    return text[len(BOM):]


def _read_text(path, what="data file", fix=_DATA_FIX):
    """Returns the text of a UTF-8 file, a leading byte order mark dropped.

    Raises:
      DataError: the file is missing, empty or not UTF-8 (naming the byte offset).
    """
    return _decode(_read_bytes(path, what, fix), path, what)


def _split_words(text):
    """Splits text on whitespace, each line ending in <eos>."""
    # The tutorial replaced "\n" by "<eos>" without spaces, which glues words
    # together on lines that lack PTB's edge spaces; on PTB the ids are identical.
    return text.replace("\n", f" {EOS} ").split()


def read_words(path, what="data file", fix=_DATA_FIX):
    """Reads a text file as words, each line ending in <eos>.

    A UTF-8 byte order mark at the start is dropped, with a warning on stderr.

    Args:
      path: UTF-8 text file, e.g. ptb.train.txt.
      what, fix: the file's name and what to do, for the error messages (a user's own
        file is not fixed by downloading PTB).
    Returns:
      list[str] of words; words are split on whitespace.
    Raises:
      DataError: the file is missing, empty, has no words or is not UTF-8, or is a
        damaged copy of a PTB file (_check_ptb_copy).
    """
    raw = _read_bytes(path, what, fix)
    _check_ptb_copy(path, raw)  # a damaged PTB file would give a wrong perplexity
    words = _split_words(_decode(raw, path, what))
    if not words:
        raise DataError(f"{what} has no words (only whitespace): {path}; {fix}")
    return words


def _check_ptb_copy(path, raw):
    """Raises DataError if path is a damaged copy of the real PTB file of its name.

    Users and tests also name their own corpora ptb.{train,valid,test}.txt, so
    only what is meant to be the real PTB is checked:
      - in a directory holding PTB_VERIFIED_MARKER (get_ptb.sh
        writes it with the files), each of the three must be the real file
        (its SHA-256);
      - elsewhere a file that starts like the real one (its first 64 bytes) but
        is shorter and stops mid-line is a truncated copy (PTB ends in "\n").

    Args:
      path: the file; only the names ptb.{train,valid,test}.txt are checked.
      raw: bytes of the file.
    """
    name = os.path.basename(path)
    if name not in _PTB_FILES:
        return
    size, sha256, head_sha256 = _PTB_FILES[name]
    verified = os.path.isfile(os.path.join(os.path.dirname(path), PTB_VERIFIED_MARKER))
    fix = f"rerun scripts/get_ptb.sh {os.path.dirname(os.path.abspath(path))}"
    if verified:
        if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha256:
            raise DataError(f"{name} is not the PTB file get_ptb.sh verified (truncated or "
                            f"altered: {len(raw)} bytes, SHA-256 differs; PTB's has {size}): "
                            f"{path}; {fix}")
    elif (len(raw) < size and not raw.endswith(b"\n")
          and hashlib.sha256(raw[:_PTB_HEAD_LEN]).hexdigest() == head_sha256):
        raise DataError(f"{name} is a truncated copy of the PTB file ({len(raw)} of {size} "
                        f"bytes, stops mid-line): {path}; {fix}")


def build_vocab(words, max_vocab_size=None):
    """Maps words to ids by descending count, ties broken by the word itself.

    Args:
      words: sequence of str, usually the training words.
      max_vocab_size: optional cap N >= 2. The result then has at most N
        entries and always includes <unk>: the top N if <unk> is among them,
        else the top N - 1 with <unk> appended as the last id, so every word
        outside the vocabulary has somewhere to go.
    Returns:
      dict word -> id, ids 0..len-1 in that order.
    Raises:
      DataError: no words, or max_vocab_size < 2.
    """
    if max_vocab_size is not None and max_vocab_size < 2:
        raise DataError(f"max_vocab_size must be >= 2 (room for {UNK} and one word), "
                        f"got {max_vocab_size}; raise it, or leave it unset for no cap")
    counts = collections.Counter(words)
    if not counts:
        raise DataError("cannot build a vocabulary from no words; check the training file")
    ordered = sorted(counts, key=lambda w: (-counts[w], w))
    if max_vocab_size is not None:
        top = ordered[:max_vocab_size]
        ordered = top if UNK in top else ordered[:max_vocab_size - 1] + [UNK]
    return {word: i for i, word in enumerate(ordered)}


def words_to_ids(words, word_to_id, source=""):
    """Maps words to ids; words outside the vocabulary become <unk>.

    The tutorial silently dropped such words, which shortens the text and makes
    perplexity on non-PTB data wrong.

    Args:
      words: sequence of str.
      word_to_id: dict word -> id.
      source: where the words came from (a file name), for error messages.
    Returns:
      int32 np.ndarray [len(words)].
    Raises:
      DataError: some words are not in a vocabulary that has no <unk>.
    """
    if UNK in word_to_id:
        unk_id = word_to_id[UNK]
    else:
        _check_all_known(words, word_to_id, source)
        unk_id = -1  # never used: every word is known
    return np.fromiter((word_to_id.get(w, unk_id) for w in words), dtype=np.int32,
                       count=len(words))


def _check_all_known(words, word_to_id, source):
    """Raises UnknownWords naming the words missing from word_to_id, if any."""
    missing = [w for w in words if w not in word_to_id]
    if not missing:
        return
    distinct = list(dict.fromkeys(missing))
    shown = ", ".join(repr(w) for w in distinct[:_OOV_SHOWN])
    more = ", ..." if len(distinct) > _OOV_SHOWN else ""
    where = f"{source}: " if source else ""
    raise UnknownWords(f"{where}{len(missing)} words ({len(distinct)} distinct) are not in "
                       f"the vocabulary and it has no {UNK}: {shown}{more}; train with "
                       f"--max_vocab_size (the vocabulary then holds {UNK}; build_vocab's "
                       f"max_vocab_size in Python) or on text that has these words")


def file_to_word_ids(path, word_to_id):
    """Reads a text file as word ids.

    Returns:
      int32 np.ndarray [num_words], <eos> included.
    Raises:
      DataError: as read_words and words_to_ids.
    """
    return words_to_ids(read_words(path), word_to_id, source=path)


def _words_in_id_order(word_to_id):
    """Returns the words as a list indexed by id.

    Raises:
      DataError: the ids are not exactly 0..len-1.
    """
    words = sorted(word_to_id, key=word_to_id.__getitem__)
    if [word_to_id[w] for w in words] != list(range(len(words))):
        raise DataError("vocabulary ids must be exactly 0..len-1; build it with build_vocab "
                        "or load_vocab")
    return words


def save_vocab(word_to_id, path, tmp_path=None):
    """Writes the vocabulary as UTF-8 text, one word per line in id order.

    The file is replaced in one rename (files.replace_text), so a crash never
    leaves a half-written vocabulary. tmp_path: the temporary's one name, for a
    writer holding a lock (a kill leaves that file, which its next write replaces).

    Raises:
      DataError: ids are not 0..len-1, or a word is empty or holds whitespace.
    """
    words = _words_in_id_order(word_to_id)
    for word in words:
        if word.split() != [word]:  # would not survive the one-word-per-line format
            raise DataError(f"cannot save vocabulary word {word!r}: words must be non-empty "
                            f"and hold no whitespace")
    files.replace_text(path, "".join(word + "\n" for word in words), prefix=".vocab.",
                       tmp_path=tmp_path)


def load_vocab(path):
    """Reads a vocabulary written by save_vocab.

    Returns:
      dict word -> id, the id being the line number from 0.
    Raises:
      DataError: the file is missing, empty, not UTF-8, or has a blank or
        duplicate line.
    """
    fix = ("it is not as training wrote it: rerun the training command, which rewrites it, "
           "or restore it from a copy")
    word_to_id = {}
    lines = _read_text(path, what="vocabulary file", fix=fix).splitlines()
    for i, word in enumerate(lines):
        if word.split() != [word]:
            raise DataError(f"{path}:{i + 1}: bad vocabulary line {word!r}: expected one word; "
                            f"{fix}")
        if word in word_to_id:
            raise DataError(f"{path}:{i + 1}: duplicate vocabulary word {word!r} (first on line "
                            f"{word_to_id[word] + 1}); {fix}")
        word_to_id[word] = i
    return word_to_id


def vocab_hash(word_to_id):
    """sha256 hex digest of the words in id order joined by newlines.

    Checkpoints store it so that they are never paired with another vocabulary.
    """
    return hashlib.sha256("\n".join(_words_in_id_order(word_to_id)).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous
class Corpus:
    """The three splits as word ids, and the vocabulary that made them.

    Attributes:
      train, valid, test: int32 np.ndarray [num_words] of each split.
      word_to_id: dict word -> id in 0..vocab_size-1.
    """
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    word_to_id: dict

    @functools.cached_property
    def id_to_word(self):
        """list[str] indexed by id (cached: generation looks words up per token)."""
        return _words_in_id_order(self.word_to_id)

    @property
    def vocab_size(self):
        return len(self.word_to_id)

    @property
    def split_sizes(self):
        """[train, valid, test] lengths in ids: with data_hash, which text is which split."""
        return [len(self.train), len(self.valid), len(self.test)]

    @functools.cached_property
    def data_hash(self):
        """sha256 hex digest of the three splits' ids: checkpoints store it so that a run
        is never resumed on other text (with the same vocabulary)."""
        digest = hashlib.sha256()
        for split in (self.train, self.valid, self.test):
            digest.update(np.ascontiguousarray(split, np.int32).tobytes())
        return digest.hexdigest()


def _check_split(words, path, what):
    """Raises DataError unless a split's words hold a real word and one prediction.

    One word leaves nothing to predict (the test perplexity would be NaN).
    """
    if all(word == EOS for word in words):
        raise DataError(f"{what} has no words (only blank lines): {path}; put text in it or "
                        f"pass the right data path")
    if len(words) < 2:
        raise DataError(f"{what} has only one word ({words[0]!r}) and needs two, a word and the "
                        f"next to predict: {path}; add text to it or pass the right data path")


def load_corpus(data_path, train_file="ptb.train.txt", valid_file="ptb.valid.txt",
                test_file="ptb.test.txt", max_vocab_size=None, word_to_id=None):
    """Reads the three splits of a corpus directory as word ids.

    Every split is checked before anything trains: it must hold at least two
    words, one not <eos> (ptb_producer then checks a split has a whole batch).
    A file that is meant to be the real PTB must be intact (the rule is in
    _check_ptb_copy: a directory get_ptb.sh marked as verified is checked by
    SHA-256; elsewhere a truncated PTB copy is caught). A UTF-8 byte order
    mark at the start of a file is dropped with a warning on stderr.

    Args:
      data_path: directory holding the three files.
      train_file, valid_file, test_file: file names inside data_path.
      max_vocab_size: optional cap for a vocabulary built here (see build_vocab).
      word_to_id: optional vocabulary to use instead of building one from the
        training file, e.g. the one saved beside a checkpoint.
    Returns:
      Corpus.
    Raises:
      DataError: missing directory or file; a file empty, not UTF-8, a damaged
        PTB copy, without words or with one word; a training file with one
        distinct word; a bad vocabulary; or both max_vocab_size and word_to_id.
    """
    if not os.path.isdir(data_path):
        raise DataError(f"data directory not found: {data_path}; {_DATA_FIX}")
    if word_to_id is not None and max_vocab_size is not None:
        raise DataError("pass max_vocab_size or word_to_id, not both: a given vocabulary is "
                        "used as it is")
    paths = [os.path.join(data_path, name) for name in (train_file, valid_file, test_file)]
    whats = ("training file", "validation file", "test file")
    for path, what in zip(paths, whats):  # fail before spending time on the training file
        if os.path.isdir(path):
            raise DataError(f"{what} {path} is a directory; {_DATA_FIX}")
        if not readable_file(path):  # a named pipe is read as a file
            raise DataError(f"{what} not found: {path}; {_DATA_FIX}")
    raws = [_read_bytes(path, what) for path, what in zip(paths, whats)]
    for path, raw in zip(paths, raws):  # all three before parsing: a damaged copy fails fast
        _check_ptb_copy(path, raw)
    splits = []
    for path, raw, what in zip(paths, raws, whats):
        words = _split_words(_decode(raw, path, what))
        _check_split(words, path, what)
        splits.append(words)
    if word_to_id is None:
        word_to_id = build_vocab(splits[0], max_vocab_size)
        if len(word_to_id) < 2:
            raise DataError(f"training file has only one distinct word ({splits[0][0]!r}) and a "
                            f"vocabulary needs two: {paths[0]}; add text to it or pass the "
                            f"right data path")
    _words_in_id_order(word_to_id)  # fail here rather than at the embedding lookup
    train, valid, test = (words_to_ids(words, word_to_id, source=path)
                          for words, path in zip(splits, paths))
    return Corpus(train=train, valid=valid, test=test, word_to_id=dict(word_to_id))


def ptb_raw_data(data_path=None):
    """The tutorial's loader: PTB splits as ids and the vocabulary size.

    Args:
      data_path: directory holding ptb.{train,valid,test}.txt; default
        DEFAULT_DATA_PATH (<repo>/data/ptb, where scripts/get_ptb.sh puts them).
    Returns:
      (train_data, valid_data, test_data, vocabulary): three int32
      np.ndarray [num_words] and the vocabulary size (10000 on PTB).
    Raises:
      DataError: as load_corpus.
    """
    corpus = load_corpus(DEFAULT_DATA_PATH if data_path is None else data_path)
    return corpus.train, corpus.valid, corpus.test, corpus.vocab_size


@dataclasses.dataclass(frozen=True, eq=False)
class Batches:
    """One epoch of (x, y) batches over ids laid out by ptb_producer.

    Attributes:
      data: read-only int32 np.ndarray [batch_size, batch_len].
      batch_size, num_steps: the batch shape.
      epoch_size: number of batches, (batch_len - 1) // num_steps.
    """
    data: np.ndarray
    batch_size: int
    num_steps: int
    epoch_size: int

    def __len__(self):
        return self.epoch_size

    def batch(self, i):
        """Returns batch i as (x, y), int32 np.ndarray [batch_size, num_steps] each.

        Raises:
          IndexError: i is outside 0..epoch_size-1.
        """
        if not 0 <= i < self.epoch_size:
            raise IndexError(f"batch {i} is outside 0..{self.epoch_size - 1}")
        lo = i * self.num_steps
        return (np.ascontiguousarray(self.data[:, lo:lo + self.num_steps]),
                np.ascontiguousarray(self.data[:, lo + 1:lo + 1 + self.num_steps]))

    def dataset(self, start=0):
        """Batches start..epoch_size-1 in order, as a prefetched tf.data.Dataset.

        Args:
          start: first batch, 0..epoch_size, so that a resumed run continues
            mid-epoch (epoch_size gives an empty dataset).
        Returns:
          tf.data.Dataset of (x, y), int32 tf.Tensor with static shape
          [batch_size, num_steps] each.
        Raises:
          DataError: start is outside 0..epoch_size.
        """
        if not 0 <= start <= self.epoch_size:
            raise DataError(f"start={start} is outside 0..{self.epoch_size} (epoch_size); resume "
                            f"with the data, batch_size and num_steps of the interrupted run")
        data = tf.constant(self.data)
        size = tf.constant([self.batch_size, self.num_steps], tf.int64)  # constant -> static shape

        def slice_batch(i):
            lo = i * self.num_steps
            x = tf.slice(data, tf.stack([tf.constant(0, tf.int64), lo]), size)
            y = tf.slice(data, tf.stack([tf.constant(0, tf.int64), lo + 1]), size)
            return x, y

        return (tf.data.Dataset.range(start, self.epoch_size)
                .map(slice_batch)
                .prefetch(PREFETCH_BATCHES)
                .with_options(_untuned()))

    def __iter__(self):
        """Yields the (x, y) tf.Tensor pairs of dataset(0); batch(i) gives NumPy."""
        return iter(self.dataset())


# Batches sliced ahead of the step: one slice takes microseconds, a step milliseconds.
PREFETCH_BATCHES = 2


def _untuned():
    """tf.data options with autotuning off.

    An autotuned pipeline runs a model thread that sleeps between optimisations,
    and deleting the iterator waits for that thread: 1.2-1.7 s with no work
    done, at the end of 8 of 12 passes measured (small's validation pass took
    5.1-5.3 s then, 3.6-4.4 s without autotuning). Slicing a batch needs no
    tuning.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _check_positive(name, value):
    """Returns value as an int; DataError unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise DataError(f"{name} must be a positive integer, got {value!r}; fix the config")
    return int(value)


def _as_id_vector(raw_data):
    """Returns raw_data as a 1-D integer array; DataError for anything else."""
    data = np.asarray(raw_data)
    if data.ndim != 1 or (data.size and not np.issubdtype(data.dtype, np.integer)):
        raise DataError(f"raw_data must be a 1-D sequence of integer word ids, got shape "
                        f"{data.shape} dtype {data.dtype}")
    return data


def ptb_producer(raw_data, batch_size, num_steps):
    """Lays word ids out as the tutorial's batches, with state carried across them.

    The ids are cut into batch_size rows of batch_len = len // batch_size
    consecutive ids (the last len % batch_size ids are dropped). Batch i is the
    num_steps columns from i * num_steps; its targets y are the same window
    moved right by one column, i.e. each word's next word. The tutorial's
    example, ids 4 3 2 1 0 5 6 1 1 1 1 0 3 4 1, batch_size=3, num_steps=2:

                    col: 0 1 | 2 3 | 4        batch_len = 15 // 3 = 5
        data  row 0:     4 3 | 2 1 | 0        epoch_size = (5 - 1) // 2 = 2
              row 1:     5 6 | 1 1 | 1
              row 2:     1 0 | 3 4 | 1
                         x0  | x1  |          x0 = cols 0-1, y0 = cols 1-2
                           y0  | y1           x1 = cols 2-3, y1 = cols 3-4

    Row r of batch i + 1 continues row r of batch i, so the RNN state at the
    end of one batch is the right initial state for the next.

    Args:
      raw_data: 1-D int sequence of word ids [num_words].
      batch_size: rows per batch, > 0.
      num_steps: unrolled time steps per batch, > 0.
    Returns:
      Batches with data int32 [batch_size, batch_len].
    Raises:
      DataError: bad batch_size or num_steps, raw_data not 1-D integers, or
        too few ids for one batch (needs batch_size * (num_steps + 1)).
    """
    batch_size = _check_positive("batch_size", batch_size)
    num_steps = _check_positive("num_steps", num_steps)
    ids = _as_id_vector(raw_data)
    batch_len = len(ids) // batch_size
    epoch_size = (batch_len - 1) // num_steps
    if epoch_size <= 0:
        raise DataError(f"epoch_size == 0, decrease batch_size or num_steps ({len(ids)} ids, "
                        f"batch_size={batch_size}, num_steps={num_steps}; one batch needs "
                        f"batch_size * (num_steps + 1) = {batch_size * (num_steps + 1)} ids)")
    # np.array copies, so the caller's array can change without changing these batches.
    data = np.array(ids[:batch_size * batch_len], dtype=np.int32).reshape(batch_size, batch_len)
    data.flags.writeable = False
    return Batches(data=data, batch_size=batch_size, num_steps=num_steps, epoch_size=epoch_size)
