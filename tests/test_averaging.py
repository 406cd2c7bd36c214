"""Tests of NT-ASGD (averaging.py) and the run's time budget: the rule, the average, the run."""

import dataclasses
import re

import numpy as np
import pytest
import tensorflow as tf

import averaging
import checkpoints
import configs
import model as model_lib
import reader
import run
import training
from helpers import grammar_text

OPTIONS = run.RunOptions(rnn_mode="basic", xla=False)


@pytest.fixture
def corpus(make_corpus):
    return reader.load_corpus(str(make_corpus(grammar_text(400), grammar_text(60, seed=1),
                                              grammar_text(60, seed=2))))


def _config(corpus, **changes):
    fields = dict(batch_size=4, num_steps=5, hidden_size=16, vocab_size=corpus.vocab_size)
    return dataclasses.replace(configs.TEST, **{**fields, **changes})


@pytest.mark.parametrize("history, nonmono, expected", [
    ([10.0, 9.0, 8.0, 8.5], 2, False),            # 8.5 is compared with 10 only
    ([10.0, 9.0, 8.0, 8.5, 8.7, 9.1], 2, True),   # 9.1 > min(10, 9, 8)
    ([10.0, 9.0, 8.0, 7.9, 7.8, 7.7], 2, False),  # still improving
    ([10.0, 11.0], 1, False),                     # needs more than nonmono epochs before it
    ([10.0, 9.0, 11.0], 1, True),
    ([10.0, 9.0, 8.0, 8.5, 8.7, 8.0], 2, False),  # a tie with the best is not worse
])
def test_should_start_is_awd_lstms_non_monotone_rule(history, nonmono, expected):
    assert averaging.should_start(history, nonmono) is expected


def _tiny_model():
    return model_lib.PTBModel(vocab_size=7, hidden_size=3, num_layers=1, init_scale=0.5,
                              rnn_mode="basic", seed=1)


def test_weight_average_is_the_mean_of_the_weights_since_start():
    model = _tiny_model()
    average = averaging.WeightAverage(model)
    average.update(model)
    assert not average.active  # off until started: update does nothing
    seen = []
    at_switch = [v.numpy() for v in model.trainable_variables]
    average.start(model)
    assert average.active  # the weights at the switch until the first step
    for got, value in zip(average.averages, at_switch):
        np.testing.assert_array_equal(got.numpy(), value)
    rng = np.random.RandomState(0)
    for _ in range(3):
        for v in model.trainable_variables:
            v.assign(rng.uniform(-1, 1, v.shape).astype(np.float32))
        average.update(model)
        seen.append([v.numpy() for v in model.trainable_variables])
    assert int(average.count.numpy()) == 3  # the steps after the switch, not the switch's
    for got, values in zip(average.averages, zip(*seen)):
        np.testing.assert_allclose(got.numpy(), np.mean(values, axis=0), rtol=1e-5, atol=1e-6)


def test_weight_average_swapped_into_the_model_and_back():
    model = _tiny_model()
    average = averaging.WeightAverage(model)
    raw = [v.numpy() for v in model.trainable_variables]
    with average.swapped_into(model):  # not active: the weights stay
        for v, r in zip(model.trainable_variables, raw):
            np.testing.assert_array_equal(v.numpy(), r)
    average.start(model)
    for a in average.averages:
        a.assign(tf.ones_like(a))
    with average.swapped_into(model):
        assert all(np.all(v.numpy() == 1.0) for v in model.trainable_variables)
    for v, r in zip(model.trainable_variables, raw):
        np.testing.assert_array_equal(v.numpy(), r)


def test_with_averaging_folds_every_training_step(corpus):
    config = _config(corpus, optimizer="asgd")
    ts = training.TrainState(config, rnn_mode="basic")
    ts.reset_epoch(0)
    ts.average.start(ts.model)
    step = averaging.with_averaging(ts.average, ts.model,
                                    training.make_train_step(ts))
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    seen = []  # the weights after each step (those at the switch are not averaged)
    for k, (x, y) in enumerate(batches.dataset()):
        cost, _ = step(x, y)
        assert np.isfinite(cost.numpy())
        seen.append([v.numpy() for v in ts.model.trainable_variables])
        if k == 4:
            break
    for got, values in zip(ts.average.averages, zip(*seen)):
        np.testing.assert_allclose(got.numpy(), np.mean(values, axis=0), rtol=1e-4, atol=1e-6)


def test_tutorial_configs_keep_no_average():
    for name in ("small", "medium", "large"):
        assert configs.get_config(name).optimizer == "sgd"
    ts = training.TrainState(dataclasses.replace(configs.TEST, vocab_size=10), rnn_mode="basic")
    assert ts.average is None
    assert not any("average" in v.name for v in ts.variables)


def test_run_with_asgd_averages_and_evaluates_the_average(corpus, tmp_path, capsys,
                                                          monkeypatch):
    save = tmp_path / "run"
    config = _config(corpus, optimizer="asgd", max_max_epoch=3, max_epoch=3)
    # The rule is tested above; here it fires after the first epoch, whatever validation says.
    triggers = []
    monkeypatch.setattr(averaging, "should_start",
                        lambda history, nonmono: triggers.append(list(history)) or True)
    metrics = run.train_and_evaluate(config, corpus, str(save), OPTIONS)
    out = capsys.readouterr().out
    assert len(triggers) == 1 and len(triggers[0]) == 1  # checked until it fired, after epoch 1
    assert re.search(r"^Epoch: 1 Valid Perplexity: .*\nAveraging the weights from here on "
                     r"\(NT-ASGD", out, re.M), out
    # The evaluation modes load the average: its stream perplexity is the run's test number.
    model, _, _ = checkpoints.load_model(str(save), rnn_mode="basic")
    assert training.stream_perplexity(model, corpus.test) == pytest.approx(
        metrics["test_perplexity"], rel=1e-5)
    raw = training.TrainState(config, rnn_mode="basic")
    tf.train.Checkpoint(state=raw).read(checkpoints.newest(str(save))).expect_partial()
    assert int(raw.average.count.numpy()) > 1
    assert not np.allclose(model.softmax_b.numpy(), raw.model.softmax_b.numpy())


def test_run_max_minutes_stops_mid_epoch_then_tests_and_a_longer_budget_goes_on(
        corpus, tmp_path, capsys):
    save = tmp_path / "run"
    config = _config(corpus, max_max_epoch=2, max_epoch=2)
    budget = dataclasses.replace(OPTIONS, max_minutes=0.0005)  # 30 ms: the first step is slower
    metrics = run.train_and_evaluate(config, corpus, str(save), budget)
    out = capsys.readouterr().out
    assert re.search(r"^Time budget of 0.0005 minutes spent at epoch 1 \(\d+\.\d%\)", out, re.M)
    assert re.search(r"^Epoch: 1 Valid Perplexity: ", out, re.M)
    assert re.search(r"^Test Perplexity: ", out, re.M)
    [partial] = metrics["epochs"]
    assert 0 < partial["fraction"] < 1
    # The same budget again: spent already, so only the test runs (the part is recorded).
    run.train_and_evaluate(config, corpus, str(save), budget)
    out = capsys.readouterr().out
    assert "Learning rate" not in out and "Test Perplexity" in out
    assert "Valid Perplexity" not in out
    # No budget: the partial epoch goes on from where it stopped, and its entry is replaced.
    metrics = run.train_and_evaluate(config, corpus, str(save), OPTIONS)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert "fraction" not in metrics["epochs"][0]
    assert metrics["epochs"][0]["train_seconds"] > partial["train_seconds"]


def test_run_asgd_starts_no_average_on_a_part_of_an_epoch(corpus, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(averaging, "should_start", lambda history, nonmono: True)
    config = _config(corpus, optimizer="asgd", max_max_epoch=2, max_epoch=2)
    budget = dataclasses.replace(OPTIONS, max_minutes=0.0005)  # stops within epoch 1
    run.train_and_evaluate(config, corpus, str(tmp_path / "run"), budget)
    out = capsys.readouterr().out
    assert "Time budget" in out and "Averaging" not in out
    # Resumed without a budget, epoch 1 ends whole: the rule is checked then.
    run.train_and_evaluate(config, corpus, str(tmp_path / "run"), OPTIONS)
    out = capsys.readouterr().out
    assert re.search(r"^Epoch: 1 Valid Perplexity: .*\nAveraging the weights", out, re.M), out


@pytest.mark.parametrize("minutes", [0, -1, float("inf")])
def test_run_options_refuse_a_budget_that_cannot_work(minutes):
    with pytest.raises(run.RunError, match="max_minutes must be > 0"):
        run.RunOptions(max_minutes=minutes)


def test_config_refuses_an_unknown_optimizer():
    with pytest.raises(configs.ConfigError, match="optimizer must be one of sgd, asgd"):
        configs.apply_overrides(configs.SMALL, ["optimizer=adam"])
    assert configs.apply_overrides(configs.SMALL, ["optimizer=asgd"]).optimizer == "asgd"
