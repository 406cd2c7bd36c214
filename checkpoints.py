"""The run directory: locked and written while training (safe saves, validated resume), found and loaded after.

    save_path/.lock      held (fcntl.flock) by the one training that writes here; holds its pid
    save_path/ckpt-N.*   the newest snapshots; save_path/checkpoint indexes them
    save_path/best/      the snapshot with the lowest validation perplexity
    save_path/vocab.txt  the vocabulary (VOCAB_FILE), checked against each snapshot's hash

A snapshot is ours if it holds a run_info (config, seed, vocabulary and data hashes). A
directory holding a snapshot that is not ours, or whose index cannot be read,
is refused: nothing here deletes or overwrites what another program wrote.
"""

import contextlib
import fcntl
import glob
import json
import logging
import os
import re
import shutil
import sys

import tensorflow as tf

import configs
import errors
import model as model_lib
import reader

VOCAB_FILE = "vocab.txt"
LOCK_FILE = ".lock"
_INDEX_FILE = "checkpoint"
_RUN_INFO_KEY = "run_info/.ATTRIBUTES/VARIABLE_VALUE"
_NUMBERED = re.compile(r"ckpt-(\d+)$")
# What tf.train.Checkpoint leaves when killed mid-save: <prefix>_temp/ (functional_saver.py).
_TEMP_DIR = re.compile(r"ckpt-\d+_temp$")
_TRAIN_FIRST = ("train first (python ptb_word_lm.py --save_path=DIR) or pass the --save_path of a "
                "trained run")
# What TensorFlow raises for a missing, truncated or corrupt checkpoint file.
_UNREADABLE = (tf.errors.OpError, ValueError, IndexError)
# Real paths of the run directories this process holds the lock of: its file's (dev, inode).
_held = {}


class CheckpointError(errors.UserError, RuntimeError):
    """A checkpoint cannot be used or written; the message says what differs or what to do."""


class _Unreadable(CheckpointError):
    """A snapshot that is missing, truncated or corrupt: an older one may still do."""

    def __init__(self, path, reason):
        super().__init__(f"cannot read checkpoint {path}: {reason}")
        self.reason = reason


@contextlib.contextmanager
def _quiet_tensorflow():
    """Keeps TensorFlow's Python warnings (e.g. ~30 lines of unrestored values) off stderr.

    The C++ lines (OP_REQUIRES failed ...) follow TF_CPP_MIN_LOG_LEVEL, fixed at
    import; _verify reads a snapshot first, so a corrupt one never reaches them.
    """
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_info(config, seed, corpus):
    """What a snapshot must match to be resumed: {"config", "seed", "vocab_hash",
    "data_hash", "split_sizes"} (corpus: reader.Corpus; a hash of its splits' ids and their
    lengths, so a resume on other text, or the same text split otherwise, is refused)."""
    return {"config": configs.to_dict(config), "seed": seed,
            "vocab_hash": reader.vocab_hash(corpus.word_to_id), "data_hash": corpus.data_hash,
            "split_sizes": corpus.split_sizes}


# Entries snapshots of older versions do not hold: compared only where the snapshot has them.
_ADDED_LATER = ("data_hash", "split_sizes")


# --- Finding snapshots ---------------------------------------------------------------------

def _exists(prefix):
    return os.path.isfile(prefix + ".index")


def _listed(directory):
    """Every prefix the `checkpoint` index names; [] if it is missing, empty or garbage."""
    with _quiet_tensorflow():
        try:
            state = tf.train.get_checkpoint_state(directory)
        except (ValueError, tf.errors.OpError):
            return []
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]
    return [p if os.path.isabs(p) else os.path.join(directory, p) for p in paths if p]


def _number(prefix):
    match = _NUMBERED.search(prefix)
    return int(match.group(1)) if match else -1


def _candidates(directory):
    """Our snapshot prefixes in directory, newest first: what the index lists plus what exists."""
    found = {p[:-len(".index")] for p in glob.glob(os.path.join(directory, "ckpt-*.index"))}
    listed = {os.path.normpath(p) for p in _listed(directory)
              if os.path.dirname(os.path.normpath(p)) == os.path.normpath(directory)}
    prefixes = {os.path.normpath(p) for p in found | listed if _NUMBERED.search(p) and _exists(p)}
    return sorted(prefixes, key=_number, reverse=True)


def newest(directory):
    """The newest snapshot prefix in directory, or None.

    The highest ckpt-N among those the `checkpoint` index lists and those whose
    .index file exists; an index that is missing, empty or garbage is ignored,
    so intact snapshots are found without it.
    """
    candidates = _candidates(directory)
    return candidates[0] if candidates else None


def find_checkpoint(save_path, checkpoint=None):
    """The checkpoint prefix to load: `checkpoint` if given, else the newest in save_path.

    Args:
      save_path: a training run's directory (holds ckpt-N.* and vocab.txt).
      checkpoint: optional prefix such as runs/small/ckpt-13 (a trailing .index
        is accepted) or a directory of checkpoints such as runs/small/best.
    Returns:
      str, a prefix that tf.train.load_checkpoint accepts.
    Raises:
      CheckpointError: nothing to load there.
    """
    check_no_pattern(checkpoint or save_path, "--checkpoint" if checkpoint else "save_path")
    if checkpoint:
        prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", checkpoint)
        if os.path.isdir(prefix):
            found = newest(prefix)
            if not found:
                raise CheckpointError(f"no checkpoint in directory {prefix}; pass a prefix such "
                                      f"as {os.path.join(prefix, 'ckpt-1')}")
            return found
        if not _exists(prefix):
            raise CheckpointError(f"checkpoint not found: {checkpoint}; pass a prefix such as "
                                  f"runs/small/ckpt-13 (no .index) or a directory such as "
                                  f"runs/small/best")
        return prefix
    if not os.path.isdir(save_path):
        what = "is not a directory" if os.path.exists(save_path) else "does not exist"
        raise CheckpointError(f"save_path {save_path} {what}; {_TRAIN_FIRST}")
    found = newest(save_path)
    if not found:
        raise CheckpointError(f"no checkpoint in {save_path}; {_TRAIN_FIRST}")
    return found


# --- Reading snapshots ---------------------------------------------------------------------

def _is_ours(path):
    """True if snapshot `path` holds a run_info (read from its .index file only)."""
    try:
        return tf.train.load_checkpoint(path).has_tensor(_RUN_INFO_KEY)
    except _UNREADABLE as e:
        raise _Unreadable(path, errors.first_line(e)) from None


def read_run_info(path):
    """The run_info a checkpoint was saved with: dict with config, seed, vocab_hash.

    Raises:
      CheckpointError: unreadable, or not a checkpoint of ptb_word_lm.py.
    """
    if not _is_ours(path):
        raise CheckpointError(f"checkpoint {path} has no run_info: it was not written by "
                              f"ptb_word_lm.py; pass a checkpoint of a ptb_word_lm.py run")
    try:
        return json.loads(tf.train.load_checkpoint(path).get_tensor(_RUN_INFO_KEY).decode())
    except _UNREADABLE as e:  # json.JSONDecodeError is a ValueError
        raise _Unreadable(path, errors.first_line(e)) from None


def _verify(path):
    """Reads every tensor of snapshot `path` (checksums included) before anything restores it.

    A restore that fails half-way logs a C++ line and ~30 Python warnings per
    attempt; reading through CheckpointReader first fails quietly instead.
    """
    try:
        snapshot = tf.train.load_checkpoint(path)
        for key in snapshot.get_variable_to_shape_map():
            snapshot.get_tensor(key)
    except _UNREADABLE as e:
        raise _Unreadable(path, errors.first_line(e)) from None


def _find_vocab(save_path, path, expected_hash):
    """The vocabulary stored beside checkpoint `path`, checked against the checkpoint's hash.

    Looked for in the checkpoint's directory, its parent (for save_path/best/)
    and save_path, in that order.
    """
    directory = os.path.dirname(os.path.abspath(path))
    candidates = [os.path.join(d, VOCAB_FILE)
                  for d in (directory, os.path.dirname(directory), save_path)]
    existing = list(dict.fromkeys(c for c in candidates if os.path.isfile(c)))
    if not existing:
        raise CheckpointError(f"no {VOCAB_FILE} beside checkpoint {path} (looked in "
                              f"{os.path.dirname(candidates[0])} and its parent): training "
                              f"writes it into save_path")
    damaged = []
    for candidate in existing:
        try:
            word_to_id = reader.load_vocab(candidate)
        except reader.DataError as e:  # another candidate may be the right one
            damaged.append(e)
            continue
        if reader.vocab_hash(word_to_id) == expected_hash:
            return word_to_id
    if len(damaged) == len(existing):
        raise damaged[0]
    raise CheckpointError(f"{existing[0]} is not the vocabulary checkpoint {path} was trained "
                          f"with (hash differs); use the vocab.txt of that run")


_AVERAGE_COUNT_KEY = "state/average/count/.ATTRIBUTES/VARIABLE_VALUE"


def _weights_checkpoint(model, path):
    """A Checkpoint that restores into `model` the weights to evaluate from snapshot `path`.

    The snapshot's object graph is Checkpoint(state=TrainState(model=...), ...):
    this mirrors the path to the model, or, once NT-ASGD averages (asgd runs),
    the path to the average, whose variables follow the model's in order (count != 0:
    averaging; -1 started with no step yet, the average then the weights at the switch).
    """
    snapshot = tf.train.load_checkpoint(path)
    if snapshot.has_tensor(_AVERAGE_COUNT_KEY) and snapshot.get_tensor(_AVERAGE_COUNT_KEY) != 0:
        average = tf.train.Checkpoint(averages=list(model.trainable_variables))
        return tf.train.Checkpoint(state=tf.train.Checkpoint(average=average))
    return tf.train.Checkpoint(state=tf.train.Checkpoint(model=model))


def _load(save_path, path, rnn_mode):
    """(model, word_to_id, config) of snapshot `path`; _Unreadable if its files fail."""
    info = read_run_info(path)
    try:
        config = configs.from_dict(info["config"])
    except (KeyError, configs.ConfigError) as e:
        raise CheckpointError(f"checkpoint {path} has an unusable config ({e}); use a checkpoint "
                              f"of this version of ptb_word_lm.py") from None
    word_to_id = _find_vocab(save_path, path, info.get("vocab_hash"))
    _verify(path)
    model = model_lib.PTBModel.from_config(config, rnn_mode=rnn_mode, for_training=False)
    try:
        with _quiet_tensorflow():
            status = _weights_checkpoint(model, path).restore(path)
            status.expect_partial().assert_existing_objects_matched()
    except AssertionError as e:
        raise CheckpointError(f"checkpoint {path} does not hold this model's weights: "
                              f"{errors.first_line(e)}") from None
    except _UNREADABLE as e:
        raise _Unreadable(path, errors.first_line(e)) from None
    return model, word_to_id, config


def load_model(save_path, checkpoint=None, rnn_mode="auto"):
    """Rebuilds a trained model from a checkpoint, with its config and vocabulary.

    Only the weights to evaluate are read (NT-ASGD's average once an asgd run
    keeps one, else the weights); the optimizer state, history and carried
    state of the TrainState checkpoint are left unread. Without `checkpoint`,
    a newest snapshot that cannot be read (corrupt, or deleted meanwhile by a
    training that is still running) gives way to the next newest, with a
    warning line; a named `checkpoint` is loaded or fails.

    Args:
      save_path: the training run's directory.
      checkpoint: optional prefix or directory, see find_checkpoint.
      rnn_mode: LSTM implementation (see rnn/kernels.py); the weights are the
        same in every mode.
    Returns:
      (model_lib.PTBModel, word_to_id dict, configs.Config).
    Raises:
      CheckpointError: no usable checkpoint or vocabulary.
      reader.DataError: the vocabulary file is malformed.
    """
    if checkpoint:
        return _load(save_path, find_checkpoint(save_path, checkpoint), rnn_mode)
    find_checkpoint(save_path)  # one line if there is nothing at all
    skipped = {}
    while True:  # listed afresh each time: a running training adds and deletes snapshots
        remaining = [p for p in _candidates(save_path) if p not in skipped]
        if not remaining:
            raise next(iter(skipped.values())) if skipped else CheckpointError(
                f"no checkpoint in {save_path}; {_TRAIN_FIRST}")
        try:
            loaded = _load(save_path, remaining[0], rnn_mode)
        except _Unreadable as e:
            skipped[remaining[0]] = e
            continue
        for path, error in skipped.items():
            print(f"warning: skipping unreadable checkpoint {path}: {error.reason}; loaded "
                  f"{remaining[0]}", file=sys.stderr)
        return loaded


# --- Writing: the lock and the Checkpointer ------------------------------------------------

def _read_pid(fd):
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def check_no_pattern(path, what):
    """Raises CheckpointError if path holds * ? or [: TensorFlow's checkpoint reader takes a
    prefix as a glob pattern, so what is saved there could never be read back."""
    held = [c for c in "*?[" if c in path]
    if held:
        raise CheckpointError(f"{what} {path} holds {held[0]!r}, which TensorFlow reads as a "
                              f"pattern in a checkpoint's path (it could not read the "
                              f"checkpoints back); choose a path without * ? [")


@contextlib.contextmanager
def lock(save_path):
    """Holds save_path for one training: a second holder fails in one line naming our pid.

    An fcntl.flock on save_path/.lock, which holds the holder's pid. The kernel
    releases it when the process ends in any way (SIGKILL included), so a lock
    file left by a killed run is taken over, with a warning. The file itself is
    never deleted (deleting a lock file races with the next holder).

    Raises:
      CheckpointError: another process holds the lock, or save_path is not writable.
    """
    path = os.path.join(save_path, LOCK_FILE)
    try:
        os.makedirs(save_path, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise CheckpointError(f"cannot create the lock file {path}: {e.strerror}; choose a "
                              f"writable save_path") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            raise CheckpointError(
                f"save_path {save_path} is in use by another training (pid "
                f"{holder if holder else 'unknown'}); wait for it to end or choose another "
                f"save_path") from None
        except OSError as e:  # ENOLCK: NFS without its lock daemon
            raise CheckpointError(f"cannot lock {path}: {e.strerror}; choose a save_path on a "
                                  f"filesystem with locks (a local disk)") from None
        stale = _read_pid(fd)
        if stale is not None:  # a clean release empties the file
            gone = "no longer running" if not _running(stale) else "ended without releasing it"
            print(f"warning: taking over the lock of {save_path} from pid {stale} ({gone})",
                  file=sys.stderr)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # ENOSPC: a full disk
            raise CheckpointError(f"cannot write the lock file {path}: {e.strerror}; choose a "
                                  f"save_path with free space") from None
        real = os.path.realpath(save_path)
        stat = os.fstat(fd)
        _held[real] = (stat.st_dev, stat.st_ino)
        try:
            yield
        finally:
            _held.pop(real, None)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _remove_stale_temps(directory):
    """Removes ckpt-N_temp/ directories a save killed half-way left (only under our lock)."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _TEMP_DIR.fullmatch(name) and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


def _check_ours(directory):
    """Refuses directory if it holds a snapshot that is not ours or whose index is unreadable.

    The CheckpointManager deletes what the index lists and saves over ckpt-N,
    so one such snapshot here would be lost.
    """
    found = {p[:-len(".index")] for p in glob.glob(os.path.join(directory, "ckpt-*.index"))}
    listed = {p for p in _listed(directory) if _exists(p)}
    for prefix in sorted(found | listed):
        try:
            ours = _is_ours(prefix)
        except _Unreadable as e:
            raise CheckpointError(
                f"cannot read checkpoint {prefix} ({e.reason}), so it is left as it is: move it "
                f"out of {directory} or choose another save_path") from None
        if not ours:
            raise CheckpointError(
                f"{directory} holds checkpoint {prefix}, which was not written by "
                f"ptb_word_lm.py (no run_info); it is not overwritten: choose another save_path")


def _repair_index(directory):
    """Rebuilds an empty or garbage `checkpoint` index from our ckpt-N files."""
    index = os.path.join(directory, _INDEX_FILE)
    if not os.path.isfile(index) or _listed(directory):
        return
    candidates = _candidates(directory)
    print(f"warning: {index} is empty or unreadable; rebuilt it from "
          f"{len(candidates)} ckpt-N file(s)", file=sys.stderr)
    if candidates:
        oldest_first = candidates[::-1]
        # With the files' times, as CheckpointManager wrote them: an entry without one counts
        # as preserved, and --keep_checkpoints would never delete it.
        times = [os.path.getmtime(f"{prefix}.index") for prefix in oldest_first]
        with _quiet_tensorflow():  # its deprecation notice, twice (Python's and absl's lines)
            tf.compat.v1.train.update_checkpoint_state(
                directory, candidates[0], all_model_checkpoint_paths=oldest_first,
                all_model_checkpoint_timestamps=times, last_preserved_timestamp=min(times) - 1)
    else:
        os.remove(index)


def check_writable(save_path):
    """Fails early (before hours of training) if save_path cannot hold checkpoints."""
    if os.path.exists(save_path) and not os.path.isdir(save_path):
        raise CheckpointError(f"save_path {save_path} is not a directory; choose a directory "
                              f"(new, or a run's to resume)")
    check_no_pattern(save_path, "save_path")
    probe = os.path.join(save_path, f".write_test.{os.getpid()}")
    try:
        os.makedirs(save_path, exist_ok=True)
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())
        finally:  # a full disk too: nothing left behind
            with contextlib.suppress(FileNotFoundError):
                os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"cannot write to save_path {save_path}: {e.strerror}; "
                              f"choose a writable directory with free space") from None


# Config fields a resume may raise: more epochs leave the schedule of those trained as it was.
_MAY_GROW = ("max_max_epoch",)


def _describe_mismatch(saved, current):
    """'key: saved -> current' for every differing entry of two run_info dicts (a config
    field of _MAY_GROW only if it shrinks)."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        if key in _ADDED_LATER and key not in saved:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}"
                      for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                      and not (key == "config" and k in _MAY_GROW and b.get(k) > a.get(k))]
        elif a != b:
            lines.append(f"{key}: {a!r} -> {b!r}")
    return lines


# The history's record of the epoch in progress (snapshots older than it have none: 0.0).
_IN_PROGRESS = "in_progress_seconds"


class Checkpointer:
    """Saves and restores `train_state` plus run metadata under save_path.

    save_path/ckpt-N.*   the newest `max_to_keep` snapshots (periodic, epoch end, signal)
    save_path/best/      the snapshot with the lowest validation perplexity
    Each snapshot holds the run_info (config, seed, vocabulary and data hashes) and the
    per-epoch history, so a resume can refuse a run it does not belong to.
    TensorFlow writes a snapshot's files before pointing the `checkpoint`
    index at it, and old snapshots are deleted only after a new one is
    complete, so an interrupted save never loses the previous good one.

    Opening refuses a directory holding a snapshot that is not ours (or whose
    index cannot be read), rebuilds an empty or garbage index, and, when this
    process holds lock(save_path), removes the ckpt-N_temp/ of killed saves.

    Raises:
      CheckpointError: save_path holds a snapshot this class must not touch.
    """

    def __init__(self, save_path, train_state, run_info, max_to_keep=3):
        self.save_path = save_path
        self.run_info = run_info
        directories = [save_path, os.path.join(save_path, "best")]
        for directory in directories:
            _check_ours(directory)
        for directory in directories:
            if os.path.realpath(save_path) in _held:
                _remove_stale_temps(directory)
            _repair_index(directory)
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self._run_info = tf.Variable(json.dumps(run_info, sort_keys=True), trainable=False)
        self._checkpoint = tf.train.Checkpoint(state=train_state, history=self.history,
                                               run_info=self._run_info)
        self._manager = tf.train.CheckpointManager(self._checkpoint, save_path, max_to_keep)
        self._best = tf.train.CheckpointManager(self._checkpoint, directories[1], 1)

    def _records(self):
        return json.loads(self.history.numpy().decode())

    def get_history(self):
        """The records of the epochs trained (a last one stopped by the time budget included)."""
        return [r for r in self._records() if _IN_PROGRESS not in r]

    def epoch_seconds(self):
        """Seconds trained in the epoch the snapshot stopped within (0.0 at an epoch's end), so
        that a resumed epoch's time and the time budget count them."""
        return next((r[_IN_PROGRESS] for r in self._records() if _IN_PROGRESS in r), 0.0)

    def set_history(self, history, epoch_seconds=0.0):
        """The next snapshots' history, and the seconds trained in the epoch in progress."""
        progress = [{_IN_PROGRESS: epoch_seconds}] if epoch_seconds else []
        self.history.assign(json.dumps(history + progress))

    def set_epoch_seconds(self, seconds):
        self.set_history(self.get_history(), seconds)

    def save(self, best=False):
        """Writes a snapshot (and the best one too if `best`); returns its path."""
        self._check_still_held()
        try:
            path = self._manager.save()
            if best:
                self._best.save()
        except (OSError, tf.errors.OpError) as e:
            kept = self._manager.latest_checkpoint or "none"
            raise CheckpointError(f"could not write a checkpoint in {self.save_path} "
                                  f"({errors.first_line(e)}); the last good checkpoint ({kept}) is "
                                  f"kept") from None
        return path

    def _check_still_held(self):
        """Raises CheckpointError if save_path's lock file is no longer the one this process
        holds: the directory was deleted (or replaced) under the run, and the next save
        would recreate it unlocked, for a second training to take and share."""
        held = _held.get(os.path.realpath(self.save_path))
        if held is None:
            return  # not locked here (a test's, or an API caller's own checkpointer)
        try:
            stat = os.stat(os.path.join(self.save_path, LOCK_FILE))
            same = (stat.st_dev, stat.st_ino) == held
        except OSError:
            same = False
        if not same:
            raise CheckpointError(f"save_path {self.save_path} was deleted or replaced while "
                                  f"this training held it; stopping without saving (start the "
                                  f"run again, alone)")

    def _check_run_info(self, path):
        differences = _describe_mismatch(read_run_info(path), self.run_info)
        if differences:
            raise CheckpointError(
                f"checkpoint {path} belongs to another run ({'; '.join(differences)}); "
                f"use the same settings and data, or another save_path")

    def restore(self, path=None):
        """Restores `path`, or the newest usable snapshot; returns its path or None if none exist.

        A corrupt or truncated snapshot of ours is skipped with a warning in
        favour of the one before it, and the best one after them all. A
        snapshot of another config, seed or vocabulary raises CheckpointError
        (nothing is restored), and so do snapshots none of which can be read:
        training afresh would overwrite them.
        """
        candidates = [path] if path else (_candidates(self.save_path)
                                          + _candidates(os.path.join(self.save_path, "best")))
        for candidate in candidates:
            try:
                self._check_run_info(candidate)
                _verify(candidate)
                with _quiet_tensorflow():
                    self._checkpoint.restore(candidate).assert_existing_objects_matched()
                self._run_info.assign(json.dumps(self.run_info, sort_keys=True))  # _MAY_GROW's
                return candidate
            except _Unreadable as e:
                reason = e.reason
            except CheckpointError:
                raise
            except (*_UNREADABLE, AssertionError, KeyError) as e:
                reason = errors.first_line(e)
            if path:
                raise CheckpointError(f"cannot read checkpoint {path}: {reason}")
            print(f"warning: skipping unreadable checkpoint {candidate}: {reason}",
                  file=sys.stderr)
        if candidates:
            raise CheckpointError(
                f"none of the {len(candidates)} checkpoints in {self.save_path} (best/ included) "
                f"can be read; move them away to train afresh there, or use another save_path")
        return None
