"""Nothing lost: runs killed at random moments and resumed end exactly like uninterrupted runs."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from helpers import REPO, SMALL_RUN, grammar_text, run_driver

# Dropout on, so the test also covers the masks a resumed run draws.
# The default LSTM path on a CPU (fused, compiled with XLA), not SMALL_RUN's basic one.
RUN = [*[f for f in SMALL_RUN if not f.startswith(("--rnn_mode", "--noxla"))],
       "--override=max_max_epoch=3", "--override=keep_prob=0.8", "--deterministic",
       "--checkpoint_every_steps=7"]


def _start(corpus, save, stderr=subprocess.DEVNULL):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [sys.executable, str(REPO / "ptb_word_lm.py"), *RUN, f"--data_path={corpus}",
         f"--save_path={save}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr,
        text=True)


def _kill_after_training_starts(proc, delay):
    """SIGKILLs proc `delay` seconds after its first line about training; True if it was killed."""
    for line in proc.stdout:
        if line.startswith(("Epoch:", "Resuming")):
            break
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _model_weights(save):
    """The model's variables in the newest checkpoint of save, by name."""
    reader = tf.train.load_checkpoint(str(save))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("state/model/")}


@pytest.fixture
def corpus(make_corpus):
    return make_corpus(grammar_text(1500), grammar_text(100, seed=1), grammar_text(100, seed=2))


def _stop_at_first_progress_line(proc):
    """SIGTERMs proc at its first progress line; what it printed after."""
    for line in proc.stdout:
        if line.startswith("0.") and "perplexity" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    proc.wait()
    return rest


def test_sigterm_then_sigkills_at_random_moments_then_resume_equals_uninterrupted(corpus,
                                                                                  tmp_path):
    reference = tmp_path / "reference"
    result = run_driver(*RUN, f"--data_path={corpus}", f"--save_path={reference}")
    assert result.returncode == 0, result.stderr

    killed = tmp_path / "killed"
    with open(tmp_path / "stopped.err", "w") as err:
        proc = _start(corpus, killed, stderr=err)
        rest = _stop_at_first_progress_line(proc)
    assert proc.returncode == 1 and "Test Perplexity" not in rest
    assert re.search(r"^Stopped at epoch 1 step \d+; checkpoint saved in",
                     (tmp_path / "stopped.err").read_text(), re.M)
    rng = random.Random(1234)
    kills = sum(_kill_after_training_starts(_start(corpus, killed), rng.uniform(0.0, 1.5))
                for _ in range(2))
    assert kills == 2, "the runs finished before they could be killed; use a bigger corpus"
    final = run_driver(*RUN, f"--data_path={corpus}", f"--save_path={killed}")
    assert final.returncode == 0, final.stderr
    assert "Resuming from" in final.stdout and "Test Perplexity" in final.stdout

    expected = json.loads((reference / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    for key in ("train_perplexity", "valid_perplexity"):
        assert [e[key] for e in got["epochs"]] == [e[key] for e in expected["epochs"]]
    assert got["test_perplexity"] == expected["test_perplexity"]
    weights, reference_weights = _model_weights(killed), _model_weights(reference)
    assert weights.keys() == reference_weights.keys() and len(weights) >= 5
    for name, value in reference_weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
