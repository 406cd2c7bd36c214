"""Tests of inference: eval of a file, generation and scoring with a trained model."""

import dataclasses
import itertools
import math
import os
import threading
import types

import numpy as np
import pytest
import tensorflow as tf

import configs
import errors
import inference
import reader
import training
from helpers import TINY_TEXT, write_corpus

EOS = reader.EOS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained two epochs on TINY_TEXT (checkpoints are tests/test_checkpoints.py's)."""
    data_path = write_corpus(tmp_path_factory.mktemp("corpus"), TINY_TEXT * 8)
    corpus = reader.load_corpus(str(data_path))
    config = dataclasses.replace(configs.TEST, vocab_size=corpus.vocab_size, hidden_size=16,
                                 batch_size=4, num_steps=5, max_max_epoch=2)
    ts = training.TrainState(config, rnn_mode="block", seed=0)
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    train_step = training.make_train_step(ts)
    for epoch in range(config.max_max_epoch):
        ts.reset_epoch(epoch)
        training.run_epoch(ts, train_step, batches)
    return types.SimpleNamespace(corpus=corpus, config=config, model=ts.model,
                                 data_path=data_path)


@pytest.fixture(scope="module")
def loaded(run):
    """(model, word_to_id, config), as checkpoints.load_model gives them."""
    return run.model, run.corpus.word_to_id, run.config


def _ids(run, words):
    return reader.words_to_ids(words, run.corpus.word_to_id)


def test_inference_error_is_a_user_error():
    assert issubclass(inference.InferenceError, errors.UserError)
    assert issubclass(inference.InferenceError, ValueError)


def test_evaluate_file_equals_stream_perplexity_and_reads_unknown_words_as_unk(run, loaded,
                                                                              tmp_path):
    model, word_to_id, _ = loaded
    path = str(run.data_path / "ptb.test.txt")
    perplexity, num_words, unknown = inference.evaluate_file(model, word_to_id, path)
    assert perplexity == pytest.approx(training.stream_perplexity(run.model, run.corpus.test),
                                       rel=1e-6)
    assert (num_words, unknown) == (len(run.corpus.test), 0)
    other = tmp_path / "other.txt"
    other.write_text("the zebra sat on the mat\nthe okapi saw a cat\n")
    perplexity, num_words, unknown = inference.evaluate_file(model, word_to_id, str(other))
    expected = _ids(run, f"the {reader.UNK} sat on the mat {EOS} the {reader.UNK} saw a cat "
                         f"{EOS}".split())
    assert perplexity == pytest.approx(training.stream_perplexity(model, expected), rel=1e-6)
    assert (num_words, unknown) == (13, 2)


def test_generate_same_seed_same_words_other_seed_differs_one_trace(loaded):
    model, word_to_id, _ = loaded
    step = inference.make_sample_step(model)
    kwargs = dict(num_words=30, temperature=1.0, top_k=0, stop_at_eos=False, sample_step=step)
    first = inference.generate(model, word_to_id, ["the"], seed=1, **kwargs)
    again = inference.generate(model, word_to_id, ["the"], seed=1, **kwargs)
    other = inference.generate(model, word_to_id, ["the"], seed=2, **kwargs)
    assert first == again and len(first) == 30
    assert first != other
    assert set(first) <= set(word_to_id)
    # The prompt and every later word went through one trace ([1, None] ids).
    assert step.experimental_get_tracing_count() == 1


def _greedy(model, ids, num_words):
    """Argmax decoding, one eager model call per word, state carried."""
    state = model.zero_state(1)
    x = tf.constant([ids], tf.int32)
    out = []
    for _ in range(num_words):
        logits, state = model(x, state)
        next_id = int(tf.argmax(logits[0, -1]))
        out.append(next_id)
        x = tf.constant([[next_id]], tf.int32)
    return out


def test_generate_top_k_1_is_greedy_decoding(run, loaded):
    model, word_to_id, _ = loaded
    id_to_word = run.corpus.id_to_word
    for prompt, seed in [(["the", "cat"], 0), ([], 5)]:
        words = inference.generate(model, word_to_id, prompt, num_words=12, temperature=1.3,
                                   top_k=1, seed=seed, stop_at_eos=False)
        expected = _greedy(model, list(_ids(run, [EOS] + prompt)), 12)
        assert words == [id_to_word[i] for i in expected]


def test_generate_top_k_beyond_the_vocabulary_samples_from_all(loaded):
    # No wrap to int32: 2**32 + 1 would be 1 (greedy), 3e9 negative.
    model, word_to_id, _ = loaded
    every = inference.generate(model, word_to_id, ["a"], num_words=15, temperature=2.0,
                               top_k=0, seed=3, stop_at_eos=False)
    for top_k in (2**32 + 1, 3_000_000_000, model.vocab_size):
        assert inference.generate(model, word_to_id, ["a"], num_words=15, temperature=2.0,
                                  top_k=top_k, seed=3, stop_at_eos=False) == every


def test_generate_top_k_samples_only_among_the_k_most_likely(run, loaded):
    model, word_to_id, _ = loaded
    words = inference.generate(model, word_to_id, ["a"], num_words=25, temperature=2.0, top_k=3,
                               seed=4, stop_at_eos=False)
    ids = _ids(run, [EOS, "a"] + words)
    logits, _ = model(tf.constant([ids[:-1]]), model.zero_state(1))
    # Rank of each sampled word among the model's logits at its step (0: the most likely).
    ranks = [int(tf.reduce_sum(tf.cast(logits[0, t] > logits[0, t, ids[t + 1]], tf.int32)))
             for t in range(1, len(ids) - 1)]
    assert max(ranks) < 3 and len(set(words)) > 1


def test_generate_stops_at_eos_unless_told_not_to(loaded):
    model, word_to_id, _ = loaded
    stopped = [inference.generate(model, word_to_id, [], num_words=40, seed=seed)
               for seed in range(5)]
    assert not any(EOS in words for words in stopped)
    assert min(len(words) for words in stopped) < 40  # TINY_TEXT lines are 6 words
    through = inference.generate(model, word_to_id, [], num_words=40, seed=0, stop_at_eos=False)
    assert len(through) == 40 and EOS in through


def test_generate_reads_unknown_prompt_words_as_unk(run, loaded):
    model, word_to_id, _ = loaded
    assert inference.unknown_words(["the", "zebra", "cat", "zebra"], word_to_id) == ["zebra"]
    kwargs = dict(num_words=8, top_k=1, stop_at_eos=False)
    assert (inference.generate(model, word_to_id, ["the", "zebra"], **kwargs)
            == inference.generate(model, word_to_id, ["the", reader.UNK], **kwargs))


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, r"temperature must be > 0"),
    ({"temperature": -1.0}, r"temperature must be > 0"),
    ({"temperature": math.nan}, r"temperature must be > 0"),
    ({"top_k": -1}, r"top_k must be an integer >= 0"),
    ({"num_words": 0}, r"num_words must be a positive integer"),
])
def test_generate_rejects_bad_sampling_settings(loaded, kwargs, message):
    model, word_to_id, _ = loaded
    with pytest.raises(inference.InferenceError, match=message):
        inference.generate(model, word_to_id, ["the"], **kwargs)


def test_words_to_text_shows_eos_as_line_ends():
    assert inference.words_to_text(["a", "b", EOS, "c"]) == "a b\nc"
    assert inference.words_to_text(["a", EOS]) == "a\n"
    assert inference.words_to_text([]) == ""


def test_score_lines_equals_stream_log_probs_of_eos_line_eos(run, loaded):
    model, word_to_id, _ = loaded
    lines = [" the cat sat on the mat ", "a dog", "", "the zebra saw a log on the mat", "cat"]
    # batch_size 2: three batches, one of them partial, each padded differently.
    scores = list(inference.score_lines(model, word_to_id, lines, batch_size=2))
    assert len(scores) == len(lines)
    for line, score in zip(lines, scores):
        ids = _ids(run, [EOS] + line.split() + [EOS])
        expected = training.stream_log_probs(run.model, ids).sum()
        assert score.log_prob == pytest.approx(expected, rel=1e-5, abs=1e-4), line
        assert score.num_words == len(line.split()) + 1
        assert score.perplexity == pytest.approx(math.exp(-score.log_prob / score.num_words))
    assert [s.unknown for s in scores] == [0, 0, 0, 1, 0]


def test_sequence_log_probs_are_the_models_next_word_log_probs(run, loaded):
    model, _, _ = loaded
    ids = np.array([_ids(run, f"{EOS} the cat sat on the".split()),
                    _ids(run, f"{EOS} a dog saw the mat".split())])
    got = inference.sequence_log_probs(model, tf.constant(ids)).numpy()
    for row in range(2):
        np.testing.assert_allclose(got[row], training.stream_log_probs(model, ids[row]),
                                   rtol=1e-5, atol=1e-5)


def test_score_lines_chunks_a_long_line_with_the_state_carried(run, loaded):
    model, word_to_id, _ = loaded
    long_line = " ".join(TINY_TEXT.split() * 5)  # 120 words: 40 chunks of 3
    lines = [long_line, "the cat", "", long_line[:50]]
    whole = list(inference.score_lines(model, word_to_id, lines, chunk_len=1000))
    chunked = list(inference.score_lines(model, word_to_id, lines, chunk_len=3))
    expected = training.stream_log_probs(run.model, _ids(run, [EOS] + long_line.split() + [EOS]))
    assert whole[0].log_prob == pytest.approx(expected.sum(), rel=1e-5, abs=1e-4)
    for got, want in zip(chunked, whole):
        assert got.num_words == want.num_words and got.unknown == want.unknown
        assert got.log_prob == pytest.approx(want.log_prob, rel=1e-5, abs=1e-4)
    with pytest.raises(inference.InferenceError, match=r"chunk_len must be a positive integer"):
        list(inference.score_lines(model, word_to_id, lines, chunk_len=0))


def test_score_lines_without_unk_names_the_source_and_line_of_an_unknown_word(loaded):
    model, word_to_id, _ = loaded
    without_unk = {w: i for w, i in word_to_id.items() if w != reader.UNK}
    lines = ["the cat", "the cat sat", "the zebra"]
    scores = inference.score_lines(model, without_unk, lines, batch_size=4, source="s.txt")
    # The lines before it, in the same batch, come first: they were lost.
    assert [score.num_words for score in itertools.islice(scores, 2)] == [3, 4]
    with pytest.raises(reader.DataError, match=r"^s\.txt line 3: 1 words \(1 distinct\) are not "
                                               r"in the vocabulary and it has no <unk>: 'zebra'"):
        next(scores)


def test_a_pipes_lines_are_read_as_they_arrive_and_say_whether_another_waits():
    read_end, write_end = os.pipe()
    long_line = b"w " * 100_000 + b"\n"  # more than one read and than the pipe holds

    def write_the_rest():
        with os.fdopen(write_end, "wb") as writer:
            writer.write(long_line + b"last, no line end")
    try:
        arriving = inference._ArrivingLines(read_end)
        lines = iter(arriving)
        os.write(write_end, b"first\nsecond\n")
        assert next(lines) == b"first\n" and arriving.waiting()  # the second is buffered
        assert next(lines) == b"second\n" and not arriving.waiting()  # nothing more yet
        writer = threading.Thread(target=write_the_rest)
        writer.start()
        assert list(lines) == [long_line, b"last, no line end"] and arriving.waiting()
        writer.join()
    finally:
        os.close(read_end)


def test_score_batches_are_bounded_in_padded_words_and_end_when_no_line_waits():
    lines = ["a b", "a b c d", "x " * 20, "a", "b", "c"]
    batches = inference._batches(iter(lines), max_lines=3, max_words=16, waiting=lambda: True)
    # [4 words] x 3 rows fit 16; the 20-word line goes alone; then 3 lines at most.
    assert [(first, [len(w) for w in words]) for first, words in batches] == [
        (1, [2, 4]), (3, [20]), (4, [1, 1, 1])]
    waits = iter([True, False, True, True])  # no line waiting after line 2: score 1-2 now
    batches = inference._batches(iter(lines[:4]), 64, 10 ** 6, lambda: next(waits))
    assert [first for first, _ in batches] == [1, 3]


@pytest.mark.parametrize("temperature", [1e-39, 1e-46, 1e-300, 5e-324])
def test_generate_with_a_tiny_temperature_is_greedy(loaded, temperature):
    model, word_to_id, _ = loaded
    kwargs = dict(num_words=12, seed=3, stop_at_eos=False)
    words = inference.generate(model, word_to_id, ["the"], temperature=temperature, **kwargs)
    assert words == inference.generate(model, word_to_id, ["the"], top_k=1, **kwargs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generate_and_score_with_tied_embeddings(cell):
    word_to_id = reader.build_vocab(TINY_TEXT.replace("\n", f" {EOS} ").split())
    id_to_word = sorted(word_to_id, key=word_to_id.get)
    config = dataclasses.replace(configs.SMALL_TIED, vocab_size=len(word_to_id), hidden_size=8,
                                 cell=cell, variational_dropout=True, keep_prob=0.5,
                                 weight_drop=0.5)
    model = training.TrainState(config, seed=4).model
    assert model.softmax_w is None
    words = inference.generate(model, word_to_id, ["the", "cat"], num_words=6, top_k=1,
                               stop_at_eos=False)
    expected = _greedy(model, reader.words_to_ids([EOS, "the", "cat"], word_to_id), 6)
    assert words == [id_to_word[i] for i in expected]
    [score] = inference.score_lines(model, word_to_id, ["the cat sat"])
    ids = reader.words_to_ids([EOS, "the", "cat", "sat", EOS], word_to_id)
    np.testing.assert_allclose(score.log_prob, training.stream_log_probs(model, ids).sum(),
                               rtol=1e-5)
