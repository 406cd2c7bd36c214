"""End-to-end tests of ptb_word_lm.py: training on a tiny corpus, and a clear answer to bad input."""

import json
import re

import pytest

from helpers import SMALL_RUN, assert_user_error, grammar_text, run_driver, tree_digest


@pytest.fixture
def corpus(make_corpus):
    return make_corpus(grammar_text(400), grammar_text(60, seed=1), grammar_text(60, seed=2))


def test_driver_trains_and_reports_like_the_tutorial(corpus, tmp_path):
    save = tmp_path / "run"
    result = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}",
                        "--override=max_max_epoch=3", "--override=max_epoch=3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^Config: \{.*\"hidden_size\": 16", out, re.M)
    assert re.search(r"^rnn_mode: basic  xla: False  parameters: [\d,]+$", out, re.M)
    assert re.search(r"^Epoch: 1 Learning rate: 1\.000$", out, re.M)
    assert len(re.findall(r"^0\.\d{3} perplexity: [\d.]+ speed: \d+ wps$", out, re.M)) >= 3
    train = [float(v) for v in re.findall(r"^Epoch: \d Train Perplexity: ([\d.]+)$", out, re.M)]
    valid = [float(v) for v in re.findall(r"^Epoch: \d Valid Perplexity: ([\d.]+)$", out, re.M)]
    test = float(re.search(r"^Test Perplexity: ([\d.]+)$", out, re.M).group(1))
    assert len(train) == len(valid) == 3
    assert train[2] < 0.7 * train[0] and valid[2] < valid[0]
    metrics = json.loads((save / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert metrics["epochs"][2]["valid_perplexity"] == pytest.approx(valid[2], abs=1e-3)
    assert metrics["test_perplexity"] == pytest.approx(test, abs=1e-3)
    assert (save / "vocab.txt").read_text().split("\n")[0] == "the"
    assert list((save / "best").glob("ckpt-*.index"))


def test_driver_rerun_of_finished_run_trains_nothing(corpus, tmp_path):
    save = tmp_path / "run"
    first = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}")
    assert first.returncode == 0, first.stderr
    again = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}")
    assert again.returncode == 0, again.stderr
    assert "Resuming from" in again.stdout and "Train Perplexity" not in again.stdout
    assert re.search(r"^Test Perplexity: ", again.stdout, re.M)


@pytest.mark.parametrize("flags, message", [
    (["--model=huge"], r"--model=huge: value should be one of"),
    (["--override=hidden_size=0"], r"hidden_size must be > 0"),
    (["--override=batch_size=-2"], r"batch_size must be > 0"),
    (["--override=keep_prob=0"], r"keep_prob must be in \(0, 1\]"),
    (["--override=keep_prob=1.5"], r"keep_prob must be in \(0, 1\]"),
    (["--override=hidden=5"], r"unknown config key 'hidden'; valid keys: init_scale"),
    (["--override=num_steps=two"], r"num_steps='two': expected int"),
    (["--rnn_mode=cudnn"], r"rnn_mode cudnn needs a GPU but TensorFlow sees none; use fused"),
    (["--rnn_mode=block", "--xla"], r"--rnn_mode=block cannot run under --xla"),
    (["--override=batch_size=500"], r"epoch_size == 0, decrease batch_size or num_steps"),
])
def test_driver_bad_flags_fail_in_one_line_writing_nothing(corpus, tmp_path, flags, message):
    save = tmp_path / "run"
    result = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}", *flags)
    assert_user_error(result, message)
    assert not save.exists()


def test_driver_bad_data_fails_in_one_line(make_corpus, tmp_path):
    save = tmp_path / "run"
    good = grammar_text(50)
    cases = {
        "missing dir": (tmp_path / "nowhere", r"nowhere.*scripts/get_ptb\.sh"),
        "empty file": (make_corpus(good, valid=""), r"empty: .*ptb\.valid\.txt"),
    }
    bad_bytes = make_corpus(good)
    (bad_bytes / "ptb.test.txt").write_bytes(b" caf\xe9 au lait \n")
    cases["bad bytes"] = (bad_bytes, r"ptb\.test\.txt")
    missing = make_corpus(good)
    (missing / "ptb.train.txt").unlink()
    cases["missing file"] = (missing, r"ptb\.train\.txt.*scripts/get_ptb\.sh")
    for name, (data_path, message) in cases.items():
        result = run_driver(*SMALL_RUN, f"--data_path={data_path}", f"--save_path={save}")
        assert_user_error(result, message)
        assert not save.exists(), name


def test_driver_refuses_checkpoint_of_another_config_and_keeps_it(corpus, tmp_path):
    save = tmp_path / "run"
    assert run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}").returncode == 0
    before = tree_digest(save)
    result = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}",
                        "--override=hidden_size=8")
    assert_user_error(result, r"belongs to another run \(config\.hidden_size: 16 -> 8\)")
    other_seed = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}",
                            "--seed=7")
    assert_user_error(other_seed, r"seed: 0 -> 7")
    assert tree_digest(save) == before


def test_driver_refuses_checkpoint_of_another_vocabulary(make_corpus, tmp_path):
    save = tmp_path / "run"
    text = grammar_text(400)
    first = make_corpus(text)
    assert run_driver(*SMALL_RUN, f"--data_path={first}", f"--save_path={save}").returncode == 0
    before = tree_digest(save)
    # One word swapped for another: same vocab_size, another vocabulary.
    other = make_corpus(text.replace("fish", "bird"))
    result = run_driver(*SMALL_RUN, f"--data_path={other}", f"--save_path={save}")
    assert_user_error(result, r"belongs to another run \(vocab_hash: '[0-9a-f]+' -> '[0-9a-f]+'\)")
    assert tree_digest(save) == before


def test_driver_unwritable_save_path_fails_before_training(corpus, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={blocker}/run")
    assert_user_error(result, r"cannot write to save_path .*file/run")
    assert "Epoch:" not in result.stdout
    assert blocker.read_text() == "not a directory"
