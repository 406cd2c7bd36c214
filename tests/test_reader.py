"""Tests for reader.py: hand-worked batches, vocabulary rules, and every DataError."""

import errno
import hashlib
import os
import pathlib
import shutil
import threading

import numpy as np
import pytest
import tensorflow as tf

import errors
import reader
from helpers import PTB_FILES

# The tutorial's reader_test.py example, worked by hand in ptb_producer's docstring.
TUTORIAL_IDS = [4, 3, 2, 1, 0, 5, 6, 1, 1, 1, 1, 0, 3, 4, 1]
TUTORIAL_BATCHES = [
    ([[4, 3], [5, 6], [1, 0]], [[3, 2], [6, 1], [0, 3]]),
    ([[2, 1], [1, 1], [3, 4]], [[1, 0], [1, 1], [4, 1]]),
]


def _assert_pairs_equal(pairs, expected):
    pairs = list(pairs)
    assert len(pairs) == len(expected)
    for (x, y), (want_x, want_y) in zip(pairs, expected):
        np.testing.assert_array_equal(np.asarray(x), want_x)
        np.testing.assert_array_equal(np.asarray(y), want_y)


def _one_line_error(func, *args, **kwargs):
    """Calls func expecting DataError; returns its message after checking it is one line."""
    with pytest.raises(reader.DataError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- ptb_producer / Batches ---------------------------------------------------

def test_ptb_producer_tutorial_example_via_batch():
    batches = reader.ptb_producer(TUTORIAL_IDS, batch_size=3, num_steps=2)
    assert batches.epoch_size == 2
    assert len(batches) == 2
    assert batches.data.shape == (3, 5)
    _assert_pairs_equal([batches.batch(0), batches.batch(1)], TUTORIAL_BATCHES)
    x, y = batches.batch(0)
    assert x.dtype == np.int32 and y.dtype == np.int32


def test_batches_iteration_yields_tutorial_example():
    _assert_pairs_equal(reader.ptb_producer(TUTORIAL_IDS, 3, 2), TUTORIAL_BATCHES)


def test_batches_dataset_start_continues_mid_epoch():
    batches = reader.ptb_producer(TUTORIAL_IDS, 3, 2)
    _assert_pairs_equal(batches.dataset(start=1), TUTORIAL_BATCHES[1:])
    _assert_pairs_equal(batches.dataset(), TUTORIAL_BATCHES)
    assert list(batches.dataset(start=2)) == []


def test_batches_dataset_has_fixed_static_shapes():
    spec = reader.ptb_producer(TUTORIAL_IDS, 3, 2).dataset(start=1).element_spec
    assert spec == (tf.TensorSpec([3, 2], tf.int32), tf.TensorSpec([3, 2], tf.int32))


def test_batches_dataset_is_not_autotuned_and_an_abandoned_iterator_still_yields_in_order():
    # Autotuning's model thread made deleting an iterator wait 1.2-1.7 s (reader._untuned).
    batches = reader.ptb_producer(TUTORIAL_IDS, 3, 2)
    dataset = batches.dataset()
    assert dataset.options().autotune.enabled is False
    abandoned = iter(dataset)
    next(abandoned)
    del abandoned
    _assert_pairs_equal(batches.dataset(), TUTORIAL_BATCHES)


def test_batches_rows_continue_across_batches():
    # The last target of row r in batch 0 is the first input of row r in batch 1.
    batches = reader.ptb_producer(TUTORIAL_IDS, 3, 2)
    (_, y0), (x1, _) = batches.batch(0), batches.batch(1)
    np.testing.assert_array_equal(y0[:, -1], [2, 1, 3])
    np.testing.assert_array_equal(x1[:, 0], [2, 1, 3])


def test_ptb_producer_drops_ids_that_do_not_fill_a_row():
    batches = reader.ptb_producer(np.arange(16), batch_size=3, num_steps=2)
    np.testing.assert_array_equal(batches.data, [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9],
                                                 [10, 11, 12, 13, 14]])
    assert batches.data.dtype == np.int32


def test_ptb_producer_smallest_corpus_gives_one_batch():
    # batch_size * (num_steps + 1) = 9 ids is exactly one batch.
    batches = reader.ptb_producer(list(range(9)), batch_size=3, num_steps=2)
    assert batches.epoch_size == 1
    _assert_pairs_equal(batches, [([[0, 1], [3, 4], [6, 7]], [[1, 2], [4, 5], [7, 8]])])


def test_ptb_producer_too_short_raises():
    message = _one_line_error(reader.ptb_producer, list(range(8)), 3, 2)
    assert "epoch_size == 0, decrease batch_size or num_steps" in message
    assert "8 ids" in message and "batch_size=3" in message and "num_steps=2" in message


@pytest.mark.parametrize("batch_size, num_steps", [(0, 2), (-1, 2), (3, 0), (3, -2), (3, 1.5)])
def test_ptb_producer_rejects_bad_sizes(batch_size, num_steps):
    message = _one_line_error(reader.ptb_producer, TUTORIAL_IDS, batch_size, num_steps)
    assert "must be a positive integer" in message


def test_batches_batch_and_dataset_reject_out_of_range():
    batches = reader.ptb_producer(TUTORIAL_IDS, 3, 2)
    with pytest.raises(IndexError):
        batches.batch(2)
    assert "start=3" in _one_line_error(batches.dataset, start=3)


# --- reading words ---------------------------------------------------------------

def test_read_words_ends_lines_with_eos(tmp_path):
    path = tmp_path / "t.txt"
    # Lines without PTB's edge spaces, and a last line without a newline.
    path.write_bytes(b"a b\nc\r\nd")
    assert reader.read_words(path) == ["a", "b", "<eos>", "c", "<eos>", "d"]


def test_read_words_reads_a_pipe_as_a_file_but_not_a_directory(tmp_path):
    # --eval_data=/dev/stdin: a pipe is no regular file, yet it reads.
    read_end, write_end = os.pipe()
    os.write(write_end, b"a b\nc\n")
    os.close(write_end)
    try:
        assert reader.read_words(f"/dev/fd/{read_end}") == ["a", "b", "<eos>", "c", "<eos>"]
    finally:
        os.close(read_end)
    with pytest.raises(errors.UserError, match="not found"):
        reader.read_words(str(tmp_path))


def test_read_words_drops_byte_order_mark_with_one_warning(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbfthe cat\n")
    assert reader.read_words(path) == ["the", "cat", "<eos>"]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1
    assert "byte order mark" in warnings[0] and str(path) in warnings[0]


def test_read_words_matches_ptb_style_lines(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(" the cat \n a <unk> \n".encode("utf-8"))
    assert reader.read_words(path) == ["the", "cat", "<eos>", "a", "<unk>", "<eos>"]


# --- vocabulary ------------------------------------------------------------------

def test_build_vocab_orders_by_count_then_word(make_corpus):
    # counts: <eos> 2, b 2, c 2, a 1; the three-way tie goes by word.
    corpus_dir = make_corpus(train="b c a\nc b\n")
    words = reader.read_words(corpus_dir / "ptb.train.txt")
    assert reader.build_vocab(words) == {"<eos>": 0, "b": 1, "c": 2, "a": 3}


def test_build_vocab_cap_appends_unk_when_not_in_top():
    words = ["x", "x", "x", "y", "y", "z"]
    assert reader.build_vocab(words, max_vocab_size=2) == {"x": 0, "<unk>": 1}
    assert reader.build_vocab(words, max_vocab_size=3) == {"x": 0, "y": 1, "<unk>": 2}


def test_build_vocab_cap_keeps_unk_in_place_when_in_top():
    words = ["<unk>", "<unk>", "y", "y", "x"]
    assert reader.build_vocab(words, max_vocab_size=2) == {"<unk>": 0, "y": 1}


def test_build_vocab_cap_above_size_still_adds_unk():
    assert reader.build_vocab(["b", "a"], max_vocab_size=5) == {"a": 0, "b": 1, "<unk>": 2}


@pytest.mark.parametrize("max_vocab_size", [1, 0])
def test_build_vocab_rejects_cap_below_two(max_vocab_size):
    message = _one_line_error(reader.build_vocab, ["a", "b"], max_vocab_size=max_vocab_size)
    assert "max_vocab_size must be >= 2" in message


def test_words_to_ids_maps_oov_to_unk():
    ids = reader.words_to_ids(["a", "zz", "b", "yy"], {"a": 0, "<unk>": 1, "b": 2})
    np.testing.assert_array_equal(ids, [0, 1, 2, 1])
    assert ids.dtype == np.int32


def test_words_to_ids_oov_without_unk_names_count_and_words():
    message = _one_line_error(reader.words_to_ids, ["a", "x", "y", "x", "b", "z"],
                              {"a": 0, "b": 1}, source="valid.txt")
    assert message.startswith("valid.txt: 4 words (3 distinct)")
    assert "'x', 'y', 'z'" in message


def test_save_vocab_load_vocab_round_trip(tmp_path):
    word_to_id = {"the": 0, "café": 1, "<unk>": 2}
    path = tmp_path / "vocab.txt"
    path.write_text("stale\n")
    reader.save_vocab(word_to_id, path)
    assert path.read_bytes() == "the\ncafé\n<unk>\n".encode("utf-8")
    assert reader.load_vocab(path) == word_to_id
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temp file left


def test_save_vocab_rejects_word_with_whitespace(tmp_path):
    message = _one_line_error(reader.save_vocab, {"a b": 0}, tmp_path / "vocab.txt")
    assert "'a b'" in message
    assert not (tmp_path / "vocab.txt").exists()


@pytest.mark.parametrize("content, expected", [
    (b"", "vocabulary file is empty"),
    (b"a\nb\na\n", "duplicate vocabulary word 'a'"),
    (b"a\n\nb\n", "bad vocabulary line ''"),
    (b"a\n\xfe\n", "offset 2"),
])
def test_load_vocab_rejects_bad_file(tmp_path, content, expected):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    message = _one_line_error(reader.load_vocab, path)
    assert expected in message and str(path) in message


def test_load_vocab_missing_file_names_path(tmp_path):
    message = _one_line_error(reader.load_vocab, tmp_path / "vocab.txt")
    assert "not found" in message and str(tmp_path / "vocab.txt") in message


def test_vocab_hash_follows_id_order():
    assert reader.vocab_hash({"a": 0, "b": 1}) == hashlib.sha256(b"a\nb").hexdigest()
    assert reader.vocab_hash({"b": 0, "a": 1}) != reader.vocab_hash({"a": 0, "b": 1})
    assert reader.vocab_hash({"b": 1, "a": 0}) == reader.vocab_hash({"a": 0, "b": 1})


# --- corpus ----------------------------------------------------------------------

def test_ptb_raw_data_returns_int32_ids_and_vocab_size(tiny_corpus):
    train, valid, test, vocabulary = reader.ptb_raw_data(str(tiny_corpus))
    # TINY_TEXT: the 6, <eos> 4, on 3, then count 2 by word: a cat dog log mat sat.
    assert vocabulary == 12
    assert isinstance(vocabulary, int)
    for ids in (train, valid, test):
        assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.shape == (28,)
    np.testing.assert_array_equal(train[:7], [0, 4, 8, 2, 0, 7, 1])  # the cat sat on the mat <eos>


def test_corpus_id_to_word_inverts_word_to_id(tiny_corpus):
    corpus = reader.load_corpus(tiny_corpus)
    assert corpus.vocab_size == 12
    assert corpus.id_to_word[:3] == ["the", "<eos>", "on"]
    assert all(corpus.id_to_word[i] == w for w, i in corpus.word_to_id.items())


def test_load_corpus_uses_given_vocabulary(make_corpus):
    corpus_dir = make_corpus(train="a b\n", valid="b c\n", test="c\n")
    corpus = reader.load_corpus(corpus_dir, word_to_id={"<unk>": 0, "<eos>": 1, "b": 2})
    np.testing.assert_array_equal(corpus.train, [0, 2, 1])
    np.testing.assert_array_equal(corpus.valid, [2, 0, 1])
    np.testing.assert_array_equal(corpus.test, [0, 1])


def test_load_corpus_cap_maps_rare_training_words_to_unk(make_corpus):
    corpus = reader.load_corpus(make_corpus(train="a a b\n"), max_vocab_size=3)
    assert corpus.word_to_id == {"a": 0, "<eos>": 1, "<unk>": 2}
    np.testing.assert_array_equal(corpus.train, [0, 0, 2, 1])


def test_load_corpus_oov_without_unk_names_file(make_corpus):
    corpus_dir = make_corpus(train="a b\n", valid="a q\n")
    message = _one_line_error(reader.load_corpus, corpus_dir,
                              word_to_id={"a": 0, "b": 1, "<eos>": 2})
    assert message.startswith(f"{corpus_dir / 'ptb.valid.txt'}: 1 words (1 distinct)")
    assert "'q'" in message


def test_load_corpus_missing_dir_says_run_get_ptb(tmp_path):
    message = _one_line_error(reader.load_corpus, tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in message and "scripts/get_ptb.sh" in message


def test_load_corpus_missing_file_says_run_get_ptb(tiny_corpus):
    (tiny_corpus / "ptb.valid.txt").unlink()
    message = _one_line_error(reader.load_corpus, tiny_corpus)
    assert str(tiny_corpus / "ptb.valid.txt") in message and "scripts/get_ptb.sh" in message


def test_load_corpus_reads_a_named_pipe_and_names_a_directory(tiny_corpus):
    # A named pipe (mkfifo) in the data directory was "not found"; a directory too.
    test_path = tiny_corpus / "ptb.test.txt"
    text = test_path.read_bytes()
    test_path.unlink()
    os.mkfifo(test_path)
    writer = threading.Thread(target=test_path.write_bytes, args=(text,), daemon=True)
    writer.start()
    try:
        corpus = reader.load_corpus(tiny_corpus)
    finally:  # a writer still waiting for a reader is let go
        os.close(os.open(test_path, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=10)
    assert corpus.test.tolist() == corpus.train.tolist()  # tiny_corpus's three splits hold the same text
    test_path.unlink()
    test_path.mkdir()
    message = _one_line_error(reader.load_corpus, tiny_corpus)
    assert f"test file {test_path} is a directory" in message


def test_load_corpus_empty_file_names_it(make_corpus):
    corpus_dir = make_corpus(test="")
    message = _one_line_error(reader.load_corpus, corpus_dir)
    assert "empty" in message and str(corpus_dir / "ptb.test.txt") in message


def test_load_corpus_undecodable_bytes_name_file_and_offset(tiny_corpus):
    (tiny_corpus / "ptb.valid.txt").write_bytes(b"ok fine \xff bad\n")
    message = _one_line_error(reader.load_corpus, tiny_corpus)
    assert str(tiny_corpus / "ptb.valid.txt") in message
    assert "not UTF-8" in message and "offset 8" in message


def test_load_corpus_byte_order_mark_changes_no_word(make_corpus, capsys):
    plain = reader.load_corpus(make_corpus(train="a b\nb c\n", valid="a c\n", test="b\n"))
    bom_dir = make_corpus(train="\ufeffa b\nb c\n", valid="a c\n", test="b\n")
    with_bom = reader.load_corpus(bom_dir)
    assert with_bom.word_to_id == plain.word_to_id
    np.testing.assert_array_equal(with_bom.train, plain.train)
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and str(bom_dir / "ptb.train.txt") in warnings[0]


@pytest.mark.parametrize("split", ["train", "valid", "test"])
@pytest.mark.parametrize("text, expected", [
    ("x", "has only one word ('x') and needs two"),
    ("\n", "has no words (only blank lines)"),
])
def test_load_corpus_rejects_split_without_two_words(make_corpus, split, text, expected):
    # A one-word test file used to train fully, then report Test Perplexity: nan.
    texts = {"train": "a b\n", "valid": "a b\n", "test": "a b\n", split: text}
    corpus_dir = make_corpus(**texts)
    message = _one_line_error(reader.load_corpus, corpus_dir)
    what = {"train": "training", "valid": "validation", "test": "test"}[split]
    assert message.startswith(f"{what} file {expected}")
    assert str(corpus_dir / f"ptb.{split}.txt") in message


def test_load_corpus_blank_training_file_blames_it_not_valid(make_corpus):
    # It used to blame ptb.valid.txt and suggest build_vocab's max_vocab_size.
    corpus_dir = make_corpus(train="\n\n", valid="a b\n", test="a b\n")
    message = _one_line_error(reader.load_corpus, corpus_dir)
    assert message.startswith("training file has no words (only blank lines): "
                              f"{corpus_dir / 'ptb.train.txt'}; ")
    assert "valid" not in message and "build_vocab" not in message


def test_load_corpus_training_file_with_one_distinct_word_names_it(make_corpus):
    # It used to fail later with "vocab_size must be >= 2, got 1".
    corpus_dir = make_corpus(train="a a a", valid="a a", test="a a")
    message = _one_line_error(reader.load_corpus, corpus_dir)
    assert message.startswith("training file has only one distinct word ('a') and a vocabulary "
                              f"needs two: {corpus_dir / 'ptb.train.txt'}; ")


def test_data_error_is_user_error_and_value_error():
    assert issubclass(reader.DataError, errors.UserError)
    assert issubclass(reader.DataError, ValueError)


def test_load_corpus_rejects_cap_with_given_vocabulary(tiny_corpus):
    _one_line_error(reader.load_corpus, tiny_corpus, max_vocab_size=5, word_to_id={"<unk>": 0})


def test_default_data_path_is_repo_data_ptb():
    repo = pathlib.Path(__file__).resolve().parent.parent
    assert pathlib.Path(reader.DEFAULT_DATA_PATH) == repo / "data" / "ptb"


# --- the real PTB ------------------------------------------------------------------

def _copy_ptb(ptb_dir, directory, marked, train=None):
    """Copies the real PTB files into directory; train (bytes) replaces ptb.train.txt.

    marked: write get_ptb.sh's verified marker beside them.
    """
    directory.mkdir()
    for name in PTB_FILES:
        shutil.copyfile(ptb_dir / name, directory / name)
    if train is not None:
        (directory / "ptb.train.txt").write_bytes(train)
    if marked:
        (directory / reader.PTB_VERIFIED_MARKER).write_text("written by scripts/get_ptb.sh\n")
    return directory


def test_ptb_raw_data_matches_tutorial_on_ptb(ptb_dir, tmp_path):
    train, valid, test, vocabulary = reader.ptb_raw_data(str(ptb_dir))
    assert vocabulary == 10000
    assert (len(train), len(valid), len(test)) == (929589, 73760, 82430)
    # The same files in a directory get_ptb.sh marked as verified pass its check.
    corpus = reader.load_corpus(_copy_ptb(ptb_dir, tmp_path / "marked", marked=True))
    assert corpus.id_to_word[:3] == ["the", "<unk>", "<eos>"]
    assert corpus.word_to_id["the"] == 0


def test_load_corpus_marked_dir_rejects_altered_ptb_file(ptb_dir, tmp_path):
    # Cut at a line end, so only the checksum can tell it from the real file.
    real = (ptb_dir / "ptb.train.txt").read_bytes()
    cut = real[:real.index(b"\n", len(real) // 2) + 1]
    data_dir = _copy_ptb(ptb_dir, tmp_path / "ptb", marked=True, train=cut)
    message = _one_line_error(reader.load_corpus, data_dir)
    assert message.startswith("ptb.train.txt is not the PTB file get_ptb.sh verified")
    assert str(data_dir / "ptb.train.txt") in message
    assert message.endswith(f"; rerun scripts/get_ptb.sh {data_dir}")


def test_load_corpus_rejects_truncated_ptb_copy_without_marker(ptb_dir, tmp_path):
    # A copy killed mid-way (e.g. onto another filesystem) stops mid-line.
    real = (ptb_dir / "ptb.train.txt").read_bytes()
    truncated = real[:1 << 20]
    assert not truncated.endswith(b"\n")
    data_dir = _copy_ptb(ptb_dir, tmp_path / "ptb", marked=False, train=truncated)
    message = _one_line_error(reader.load_corpus, data_dir)
    assert message.startswith(f"ptb.train.txt is a truncated copy of the PTB file "
                              f"({1 << 20} of {len(real)} bytes")
    assert message.endswith(f"; rerun scripts/get_ptb.sh {data_dir}")


def test_read_words_rejects_a_damaged_ptb_file_as_load_corpus_does(ptb_dir, tmp_path):
    # What --mode=eval --eval_data=test reads: a wrong file must not give a perplexity.
    real = (ptb_dir / "ptb.train.txt").read_bytes()
    cut = real[:real.index(b"\n", len(real) // 2) + 1]
    marked = _copy_ptb(ptb_dir, tmp_path / "marked", marked=True, train=cut)
    message = _one_line_error(reader.read_words, str(marked / "ptb.train.txt"))
    assert message.startswith("ptb.train.txt is not the PTB file get_ptb.sh verified")
    unmarked = _copy_ptb(ptb_dir, tmp_path / "unmarked", marked=False, train=real[:1 << 20])
    message = _one_line_error(reader.read_words, str(unmarked / "ptb.train.txt"))
    assert message.startswith("ptb.train.txt is a truncated copy of the PTB file")
    assert len(reader.read_words(str(marked / "ptb.valid.txt"))) == 73760


def test_read_words_of_an_unreadable_file_is_one_error(tmp_path, monkeypatch):
    path = tmp_path / "text.txt"
    path.write_text("a b\n")
    real_open = open

    def denied(file, mode="r", *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denied)
    message = _one_line_error(reader.read_words, str(path))
    assert message.startswith(f"cannot read data file {path}: Permission denied")


def test_load_corpus_accepts_own_corpus_cut_from_ptb(ptb_dir, tmp_path):
    # Whole lines of PTB under PTB's names, no marker: a user's own corpus, read as it is.
    data_dir = tmp_path / "small"
    data_dir.mkdir()
    for name in PTB_FILES:
        lines = (ptb_dir / name).read_bytes().splitlines(keepends=True)
        (data_dir / name).write_bytes(b"".join(lines[:200]))
    corpus = reader.load_corpus(data_dir)
    assert corpus.train.shape[0] > 200
