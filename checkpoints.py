"""Checkpoints of a training run: safe saves, newest-few plus best, validated resume with fallback."""

import glob
import json
import os
import re
import sys

import tensorflow as tf

from errors import UserError

_RUN_INFO_KEY = "run_info/.ATTRIBUTES/VARIABLE_VALUE"


def read_run_info(path):
    """The run_info dict (config, seed, vocab_hash) stored in checkpoint `path`."""
    return json.loads(tf.train.load_checkpoint(path).get_tensor(_RUN_INFO_KEY).decode())


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be used or written; the message says what differs or what to do."""


def check_writable(save_path):
    """Fails early (before hours of training) if save_path cannot hold checkpoints."""
    try:
        os.makedirs(save_path, exist_ok=True)
        probe = os.path.join(save_path, f".write_test.{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"cannot write to save_path {save_path}: {e.strerror}; "
                              f"choose a writable directory with free space") from None


def _describe_mismatch(saved, current):
    """'key: saved -> current' for every differing entry of two run_info dicts."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines


class Checkpointer:
    """Saves and restores `train_state` plus run metadata under save_path.

    save_path/ckpt-N.*   the newest `max_to_keep` snapshots (periodic, epoch end, signal)
    save_path/best/      the snapshot with the lowest validation perplexity
    Each snapshot holds the run_info (config, seed, vocabulary hash) and the
    per-epoch history, so a resume can refuse a run it does not belong to.
    TensorFlow writes a snapshot's files before pointing the `checkpoint`
    index at it, and old snapshots are deleted only after a new one is
    complete, so an interrupted save never loses the previous good one.
    """

    def __init__(self, save_path, train_state, run_info, max_to_keep=3):
        self.save_path = save_path
        self.run_info = run_info
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self._checkpoint = tf.train.Checkpoint(
            state=train_state, history=self.history,
            run_info=tf.Variable(json.dumps(run_info, sort_keys=True), trainable=False))
        self._manager = tf.train.CheckpointManager(self._checkpoint, save_path, max_to_keep)
        self._best = tf.train.CheckpointManager(self._checkpoint, os.path.join(save_path, "best"), 1)

    def get_history(self):
        return json.loads(self.history.numpy().decode())

    def set_history(self, history):
        self.history.assign(json.dumps(history))

    def save(self, best=False):
        """Writes a snapshot (and the best one too if `best`); returns its path."""
        try:
            path = self._manager.save()
            if best:
                self._best.save()
        except (OSError, tf.errors.OpError) as e:
            kept = self._manager.latest_checkpoint or "none"
            raise CheckpointError(f"could not write a checkpoint in {self.save_path} ({e}); "
                                  f"the last good checkpoint ({kept}) is kept") from None
        return path

    def _candidates(self):
        """Snapshot prefixes, newest first: the index's list, else whatever files exist."""
        listed = list(self._manager.checkpoints)
        found = {p[:-len(".index")] for p in glob.glob(os.path.join(self.save_path, "ckpt-*.index"))}
        number = lambda p: int(re.search(r"ckpt-(\d+)$", p).group(1))
        return sorted(set(listed) | found, key=number, reverse=True)

    def _check_run_info(self, path):
        saved = read_run_info(path)
        differences = _describe_mismatch(saved, self.run_info)
        if differences:
            raise CheckpointError(
                f"checkpoint {path} belongs to another run ({'; '.join(differences)}); "
                f"use the same settings or another save_path")

    def restore(self, path=None):
        """Restores `path`, or the newest usable snapshot; returns its path or None if none exist.

        A corrupt or truncated snapshot is skipped with a warning in favour of the
        one before it. A snapshot of another config, seed or vocabulary raises
        CheckpointError (nothing is restored).
        """
        candidates = [path] if path else self._candidates()
        for candidate in candidates:
            try:
                self._check_run_info(candidate)
                self._checkpoint.restore(candidate).assert_existing_objects_matched()
                return candidate
            except CheckpointError:
                raise
            except (tf.errors.OpError, ValueError, AssertionError, KeyError, IndexError) as e:
                reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                if path:
                    raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
                print(f"warning: skipping unreadable checkpoint {candidate}: {reason}",
                      file=sys.stderr)
        return None


# TEMPORARY shims until the run-directory work lands.
VOCAB_FILE = "vocab.txt"


def run_info(config, seed, word_to_id):
    import configs
    import reader
    return {"config": configs.to_dict(config), "seed": seed,
            "vocab_hash": reader.vocab_hash(word_to_id)}


import contextlib  # noqa: E402


@contextlib.contextmanager
def lock(save_path):
    yield
