"""Helpers shared by the test modules (no test module imports another)."""

import hashlib
import importlib
import os
import pathlib
import random
import re
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
# PTB-style lines: lower case, edge spaces, <unk> already present.
TINY_TEXT = (" the cat sat on the mat \n"
             " the dog sat on the log \n"
             " a cat saw a <unk> dog \n"
             " the mat was on the log \n")
# A small, fast model for driver runs: overrides on the test config.
SMALL_RUN = ["--model=test", "--override=batch_size=4", "--override=num_steps=5",
             "--override=hidden_size=16", "--rnn_mode=basic", "--noxla"]


def write_corpus(directory, train=TINY_TEXT, valid=None, test=None):
    """Writes ptb.{train,valid,test}.txt (UTF-8) into directory; valid and test default to train."""
    texts = (train, train if valid is None else valid, train if test is None else test)
    for name, text in zip(PTB_FILES, texts):
        (pathlib.Path(directory) / name).write_bytes(text.encode("utf-8"))
    return directory


def grammar_text(num_lines, seed=0):
    """PTB-style lines from a tiny grammar: learnable, so perplexity falls quickly."""
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "the man"], ["sat on", "saw", "ate"], [
        "the mat", "a log", "the fish", "<unk>"]
    return "".join(f" {rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} \n"
                   for _ in range(num_lines))


def run_driver(*args, timeout=300, env=(), **kwargs):
    """Runs the driver in a fresh process; returns the CompletedProcess (text).

    stdout and stderr are captured unless kwargs say where either goes; env: variables
    set on top of this process's.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **dict(env))
    if not {"stdout", "stderr"} & kwargs.keys():
        kwargs["capture_output"] = True
    return subprocess.run([sys.executable, str(REPO / "ptb_word_lm.py"), *args], cwd=REPO,
                          env=env, text=True, timeout=timeout, **kwargs)


def driver_exit_in_process(*args):
    """ptb_word_lm.main on args in this process; what it exits with (0 if it returns).

    The command's own code path up to the error a case provokes, without a TensorFlow
    start-up per case. What only a process shows (absl's parsing errors, Python printing
    the exit message, exit codes, signals) stays with run_driver.
    """
    if "ptb_word_lm" not in sys.modules:
        # Its import sets TF_* defaults for its own process: keep them out of this one.
        unset = [name for name in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPU_ALLOCATOR_USE_BFC")
                 if name not in os.environ]
        importlib.import_module("ptb_word_lm")
        for name in unset:
            os.environ.pop(name, None)
    ptb_word_lm = sys.modules["ptb_word_lm"]
    flags = ptb_word_lm.FLAGS
    flags.unparse_flags()
    try:
        ptb_word_lm.main(flags(["ptb_word_lm.py", *args]))
    except SystemExit as e:
        return e.code
    finally:
        flags.unparse_flags()
    return 0


def assert_exit_error(code, message):
    """A driver_exit_in_process result that is one `error:` line matching message."""
    assert isinstance(code, str) and code.startswith("error: "), code
    assert "\n" not in code and re.search(message, code), code


def tree_digest(path):
    """sha256 over every file's relative path and bytes (None if path does not exist)."""
    path = pathlib.Path(path)
    if not path.exists():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def assert_user_error(result, message):
    """Non-zero exit, one error line naming the problem, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines()
              if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(message, errors[0]), errors[0]


def tensorboard_scalars(log_dir):
    """{tag: [(step, value), ...]} of every scalar in the event files under log_dir."""
    import tensorflow as tf  # only the tests that read event files pay for it here
    scalars = {}
    for path in sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor))))
    return scalars
