"""Tests of the command line (ptb_word_lm.py): flags, errors, signals.

The run itself is tested in test_run.py. The errors main() maps run main() in this
process; fresh processes are kept for what only a process shows: parsing, the
`error:` line on stderr, exit codes and signals.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import (REPO, SMALL_RUN, assert_exit_error, assert_user_error,
                     driver_exit_in_process, grammar_text, run_driver)


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
    assert re.search(r"^rnn_mode: basic  xla: False  precision: float32  parameters: [\d,]+$",
                     out, re.M)
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


# One case per kind of error main() maps (config, kernel, data, run option), in this process:
# every value each check refuses is tested in test_configs.py and test_run.py. The two
# cases below in a fresh process show what only a process shows: the line on stderr.
@pytest.mark.parametrize("flags, message", [
    (["--override=hidden=5"], r"unknown config key 'hidden'; valid keys: init_scale"),
    (["--rnn_mode=cudnn"], r"rnn_mode cudnn needs a GPU but TensorFlow sees none; use fused"),
    (["--rnn_mode=block", "--xla"], r"--rnn_mode=block cannot run under --xla"),
    (["--precision=bfloat16"], r"--precision=bfloat16 runs only with --rnn_mode=fused"),
    (["--override=batch_size=500"], r"the train split: epoch_size == 0, decrease batch_size or "
                                     r"num_steps"),
    (["--checkpoint_every_minutes=-1"], r"checkpoint_every_minutes must be >= 0 \(0: off\)"),
    (["--seed=18446744073709551616"], r"seed 18446744073709551616 is outside the 64-bit range"),
])
def test_driver_bad_flags_fail_in_one_line_writing_nothing(corpus, tmp_path, flags, message):
    save = tmp_path / "run"
    code = driver_exit_in_process(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={save}",
                                  *flags)
    assert_exit_error(code, message)
    assert not save.exists()


def test_driver_bad_data_fails_in_one_line(make_corpus, tmp_path):
    save = tmp_path / "run"
    good = grammar_text(50)
    # Two of the reader's refusals (test_reader.py has them all).
    cases = {"missing dir": (tmp_path / "nowhere", r"nowhere.*scripts/get_ptb\.sh")}
    bad_bytes = make_corpus(good)
    (bad_bytes / "ptb.test.txt").write_bytes(b" caf\xe9 au lait \n")
    cases["bad bytes"] = (bad_bytes, r"ptb\.test\.txt")
    for name, (data_path, message) in cases.items():
        code = driver_exit_in_process(*SMALL_RUN, f"--data_path={data_path}",
                                      f"--save_path={save}")
        assert_exit_error(code, message)
        assert not save.exists(), name


def test_driver_process_prints_absl_and_own_errors_as_one_line(tmp_path):
    # absl's parsing error; then one of main()'s, which must also come before loading any
    # data (a missing data directory would otherwise be the first error).
    nowhere = f"--data_path={tmp_path / 'nowhere'}"
    for flag, message in [("--model=huge", r"^error: flag --model=huge: value should be one of"),
                          ("--no_such_flag=3", r"^error: Unknown command line flag 'no_such_flag'"),
                          ("--keep_checkpoints=0", r"keep_checkpoints must be >= 1"),
                          ("--noxla=1", r"^error: --noxla=1 does not take an argument")]:
        result = run_driver(*SMALL_RUN, nowhere, f"--save_path={tmp_path / 'run'}", flag)
        assert_user_error(result, message)
        assert not (tmp_path / "run").exists()


def test_driver_stray_argument_is_one_line_naming_it():
    result = run_driver("--model=test", "train")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "--data_path" not in result.stderr  # no help dump
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unexpected argument 'train'; did you mean --mode=train?"], \
        result.stderr


@pytest.mark.parametrize("argument, hint", [
    ("num_steps=35", r"; did you mean --override=num_steps=35\?$"),
    ("seed=3", r"; did you mean --seed=3\?$"),
    ("medium", r"; did you mean --model=medium\?$"),
    ("banana", r"; flags are written --name=value \(see --help\)$"),
    ("--=x", r"; flags are written --name=value \(see --help\)$"),  # not --override=--=x
])
def test_driver_stray_argument_hints_at_the_flag_it_meant(capsys, argument, hint):
    assert driver_exit_in_process("--model=test", argument) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: unexpected argument {argument!r}")
    assert re.search(hint, errors[0]), errors[0]


def test_driver_with_stdout_closed_fails_instead_of_losing_the_results(corpus, tmp_path):
    result = run_driver(*SMALL_RUN, f"--data_path={corpus}", f"--save_path={tmp_path / 'run'}",
                        preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE)
    assert_user_error(result, r"stdout is closed, so the results would be lost")
    assert not (tmp_path / "run").exists()


def test_driver_ctrl_c_during_start_up_is_one_line_and_exit_130(corpus, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, str(REPO / "ptb_word_lm.py"), *SMALL_RUN,
                             f"--data_path={corpus}", f"--save_path={tmp_path / 'run'}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.0)  # TensorFlow's import takes several seconds
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
