"""Tests of inference: loading a checkpoint's model and vocabulary, eval, generation, scoring."""

import dataclasses
import math
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import configs
import inference
import reader
import training
from helpers import TINY_TEXT

EOS = reader.EOS


def _train_run(save_path, data_path, epochs=2):
    """Trains a tiny model as the driver does and saves checkpoint, best and vocab.txt."""
    corpus = reader.load_corpus(str(data_path))
    config = dataclasses.replace(configs.TEST, vocab_size=corpus.vocab_size, hidden_size=16,
                                 batch_size=4, num_steps=5, max_max_epoch=epochs)
    ts = training.TrainState(config, rnn_mode="block", seed=0)
    run_info = {"config": configs.to_dict(config), "seed": 0,
                "vocab_hash": reader.vocab_hash(corpus.word_to_id)}
    checkpointer = checkpoints.Checkpointer(str(save_path), ts, run_info)
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    train_step = training.make_train_step(ts)
    for epoch in range(epochs):
        ts.reset_epoch(epoch)
        training.run_epoch(ts, train_step, batches)
    checkpointer.save(best=True)
    reader.save_vocab(corpus.word_to_id, os.path.join(save_path, "vocab.txt"))
    return types.SimpleNamespace(save_path=str(save_path), corpus=corpus, config=config,
                                 model=ts.model, data_path=data_path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data_path = tmp_path_factory.mktemp("corpus")
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (data_path / name).write_text(TINY_TEXT * 8)
    return _train_run(tmp_path_factory.mktemp("run"), data_path)


@pytest.fixture(scope="module")
def loaded(run):
    """(model, word_to_id, config) as load_model gives them."""
    return inference.load_model(run.save_path)


def _ids(run, words):
    return reader.words_to_ids(words, run.corpus.word_to_id)


def test_load_model_restores_weights_config_and_vocabulary(run, loaded):
    model, word_to_id, config = loaded
    assert config == run.config and word_to_id == run.corpus.word_to_id
    assert len(model.trainable_variables) == len(run.model.trainable_variables)
    for restored, trained in zip(model.trainable_variables, run.model.trainable_variables):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy(), err_msg=trained.name)


def test_find_checkpoint_newest_named_prefix_and_best_directory(run):
    newest = inference.find_checkpoint(run.save_path)
    assert newest == tf.train.latest_checkpoint(run.save_path)
    assert inference.find_checkpoint(run.save_path, newest + ".index") == newest
    best = inference.find_checkpoint(run.save_path, os.path.join(run.save_path, "best"))
    assert os.path.dirname(best) == os.path.join(run.save_path, "best")
    model, word_to_id, _ = inference.load_model(run.save_path, best)  # vocab.txt one level up
    assert word_to_id == run.corpus.word_to_id


def test_load_model_without_checkpoint_says_train_first(tmp_path):
    with pytest.raises(inference.InferenceError, match=r"no checkpoint in .*train first"):
        inference.load_model(str(tmp_path))
    with pytest.raises(inference.InferenceError, match=r"does not exist; train first"):
        inference.load_model(str(tmp_path / "nowhere"))
    with pytest.raises(inference.InferenceError, match=r"checkpoint not found: .*ckpt-9"):
        inference.find_checkpoint(str(tmp_path), str(tmp_path / "ckpt-9"))


def test_load_model_needs_the_checkpoints_own_vocabulary(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.save_path, copy)
    (copy / "vocab.txt").unlink()
    with pytest.raises(inference.InferenceError, match=r"no vocab\.txt beside checkpoint"):
        inference.load_model(str(copy))
    words = sorted(run.corpus.word_to_id, key=run.corpus.word_to_id.get)
    (copy / "vocab.txt").write_text("\n".join(reversed(words)) + "\n")
    with pytest.raises(inference.InferenceError, match=r"not the vocabulary .* trained with"):
        inference.load_model(str(copy))


def test_load_model_of_a_truncated_checkpoint_fails_in_one_line(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run.save_path, copy)
    data_file = f"{tf.train.latest_checkpoint(str(copy))}.data-00000-of-00001"
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)
    with pytest.raises(inference.InferenceError, match=r"cannot read checkpoint .*ckpt-\d+: "):
        inference.load_model(str(copy))


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
