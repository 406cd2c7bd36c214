"""Tests of checkpoints: the run directory's lock, saves, discovery, resume and loading."""

import dataclasses
import errno
import gc
import logging
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import configs
import errors
import reader
import training
from helpers import REPO, TINY_TEXT, tree_digest, write_corpus

CheckpointError = checkpoints.CheckpointError


def _config(corpus):
    return dataclasses.replace(configs.TEST, vocab_size=corpus.vocab_size, hidden_size=16,
                               batch_size=4, num_steps=5, max_max_epoch=1)


def _open(save_path, corpus, seed=0):
    """A fresh TrainState and its Checkpointer on save_path, as a training opens them."""
    ts = training.TrainState(_config(corpus), rnn_mode="basic", seed=seed)
    info = checkpoints.run_info(ts.config, seed, corpus)
    return ts, checkpoints.Checkpointer(str(save_path), ts, info)


class _SaveAt(training.EpochHooks):
    """Saves a checkpoint after each of the given steps of the epoch."""

    def __init__(self, checkpointer, steps):
        self.checkpointer, self.steps = checkpointer, set(steps)

    def after_step(self, ts, outputs):
        if int(ts.step.numpy()) in self.steps:
            self.checkpointer.save()
        return False


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run: ckpt-1..3 (one epoch, saved after each third), best/, vocab.txt."""
    data_path = write_corpus(tmp_path_factory.mktemp("corpus"), TINY_TEXT * 8)
    corpus = reader.load_corpus(str(data_path))
    save_path = tmp_path_factory.mktemp("run")
    ts, checkpointer = _open(save_path, corpus)
    ts.reset_epoch(0)
    batches = reader.ptb_producer(corpus.train, ts.config.batch_size, ts.config.num_steps)
    train_step = training.make_train_step(ts)
    training.run_epoch(ts, train_step, batches, _SaveAt(
        checkpointer, [batches.epoch_size // 3, 2 * batches.epoch_size // 3]))
    checkpointer.save(best=True)
    reader.save_vocab(corpus.word_to_id, str(save_path / checkpoints.VOCAB_FILE))
    return types.SimpleNamespace(save_path=str(save_path), corpus=corpus, config=ts.config,
                                 model=ts.model)


@pytest.fixture
def copy(run, tmp_path):
    """A copy of the run's directory to damage."""
    target = tmp_path / "run"
    shutil.copytree(run.save_path, target)
    return target


def _weights(model):
    return [v.numpy() for v in model.trainable_variables]


def _corrupt(prefix):
    """Flips bytes in the middle of a snapshot's data file: same size, checksum mismatch."""
    data_file = f"{prefix}.data-00000-of-00001"
    data = bytearray(open(data_file, "rb").read())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0xFF
    open(data_file, "wb").write(bytes(data))


def _truncate(prefix):
    data_file = f"{prefix}.data-00000-of-00001"
    with open(data_file, "r+b") as f:
        f.truncate(os.path.getsize(data_file) // 2)


def _foreign_checkpoints(directory, count=3):
    """Another program's TensorFlow checkpoints: ckpt-1..count and their index."""
    other = tf.train.Checkpoint(weights=tf.Variable([1.0, 2.0]))
    manager = tf.train.CheckpointManager(other, str(directory), max_to_keep=count)
    for _ in range(count):
        manager.save()


def test_errors_are_user_errors():
    assert issubclass(CheckpointError, errors.UserError)
    assert issubclass(CheckpointError, RuntimeError)


def test_run_info_holds_config_seed_vocab_and_data_hashes(run):
    info = checkpoints.run_info(run.config, 7, run.corpus)
    assert info == {"config": configs.to_dict(run.config), "seed": 7,
                    "vocab_hash": reader.vocab_hash(run.corpus.word_to_id),
                    "data_hash": run.corpus.data_hash,
                    "split_sizes": [len(run.corpus.train), len(run.corpus.valid),
                                    len(run.corpus.test)]}
    assert checkpoints.read_run_info(os.path.join(run.save_path, "ckpt-3")) == \
        checkpoints.run_info(run.config, 0, run.corpus)


def test_load_model_restores_weights_config_and_vocabulary(run):
    model, word_to_id, config = checkpoints.load_model(run.save_path)
    assert config == run.config and word_to_id == run.corpus.word_to_id
    assert len(model.trainable_variables) == len(run.model.trainable_variables)
    for restored, trained in zip(model.trainable_variables, run.model.trainable_variables):
        np.testing.assert_array_equal(restored.numpy(), trained.numpy(), err_msg=trained.name)


def test_find_checkpoint_newest_named_prefix_and_best_directory(run):
    newest = checkpoints.find_checkpoint(run.save_path)
    assert newest == tf.train.latest_checkpoint(run.save_path) == checkpoints.newest(run.save_path)
    assert newest.endswith("ckpt-3")
    assert checkpoints.find_checkpoint(run.save_path, newest + ".index") == newest
    best = checkpoints.find_checkpoint(run.save_path, os.path.join(run.save_path, "best"))
    assert os.path.dirname(best) == os.path.join(run.save_path, "best")
    _, word_to_id, _ = checkpoints.load_model(run.save_path, best)  # vocab.txt one level up
    assert word_to_id == run.corpus.word_to_id


def test_load_model_without_checkpoint_says_train_first(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*train first"):
        checkpoints.load_model(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"does not exist; train first"):
        checkpoints.load_model(str(tmp_path / "nowhere"))
    (tmp_path / "a_file").write_text("")  # it said "does not exist"; training "File exists"
    with pytest.raises(CheckpointError, match=r"a_file is not a directory; train first"):
        checkpoints.load_model(str(tmp_path / "a_file"))
    with pytest.raises(CheckpointError, match=r"a_file is not a directory; choose a directory"):
        checkpoints.check_writable(str(tmp_path / "a_file"))
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*ckpt-9"):
        checkpoints.find_checkpoint(str(tmp_path), str(tmp_path / "ckpt-9"))


def test_load_model_needs_the_checkpoints_own_vocabulary(run, copy):
    (copy / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=r"no vocab\.txt beside checkpoint"):
        checkpoints.load_model(str(copy))
    words = sorted(run.corpus.word_to_id, key=run.corpus.word_to_id.get)
    (copy / "vocab.txt").write_text("\n".join(reversed(words)) + "\n")
    with pytest.raises(CheckpointError, match=r"not the vocabulary .* trained with"):
        checkpoints.load_model(str(copy))
    (copy / "vocab.txt").write_text("the\nthe\n")  # damaged
    with pytest.raises(reader.DataError, match=r"duplicate vocabulary word 'the' .*; it is not as "
                                               r"training wrote it: rerun the training command"):
        checkpoints.load_model(str(copy))
    # Beside best/ a damaged copy of its own does not hide save_path's good one.
    (copy / "vocab.txt").write_text("\n".join(words) + "\n")
    (copy / "best" / "vocab.txt").write_text("the\nthe\n")
    best = checkpoints.find_checkpoint(str(copy), str(copy / "best"))
    assert checkpoints.load_model(str(copy), best)[1] == run.corpus.word_to_id


def test_load_model_of_a_named_truncated_checkpoint_fails_naming_it(copy):
    _truncate(str(copy / "ckpt-3"))
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint .*ckpt-3: "):
        checkpoints.load_model(str(copy), str(copy / "ckpt-3"))


def test_load_model_falls_back_when_the_newest_is_deleted_meanwhile(run, copy, monkeypatch,
                                                                   capsys):
    # Fault 12: a running training deletes the newest between its discovery and its read.
    read_run_info = checkpoints.read_run_info

    def deleted_first(path):
        if path.endswith("ckpt-3"):
            for name in os.listdir(copy):
                if name.startswith("ckpt-3."):
                    os.remove(copy / name)
        return read_run_info(path)

    monkeypatch.setattr(checkpoints, "read_run_info", deleted_first)
    model, _, _ = checkpoints.load_model(str(copy))
    assert "skipping unreadable checkpoint" in capsys.readouterr().err
    expected, _, _ = checkpoints.load_model(str(copy), str(copy / "ckpt-2"))
    for got, want in zip(_weights(model), _weights(expected)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*ckpt-3"):
        checkpoints.load_model(str(copy), str(copy / "ckpt-3"))


def test_load_model_falls_back_from_a_corrupt_newest_and_fails_when_none_is_left(copy, capsys):
    _corrupt(str(copy / "ckpt-3"))
    checkpoints.load_model(str(copy))
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and "ckpt-3" in warnings[0] and warnings[0].endswith("ckpt-2")
    for n in (1, 2):
        _corrupt(str(copy / f"ckpt-{n}"))
    with pytest.raises(CheckpointError, match=r"^cannot read checkpoint .*ckpt-3: .*Checksum"):
        checkpoints.load_model(str(copy))


def test_newest_falls_back_to_the_files_when_the_index_is_gone(run, copy):
    (copy / "checkpoint").unlink()
    assert checkpoints.newest(str(copy)) == str(copy / "ckpt-3")
    _, word_to_id, _ = checkpoints.load_model(str(copy))
    assert word_to_id == run.corpus.word_to_id
    assert checkpoints.newest(str(copy / "nowhere")) is None


@pytest.mark.parametrize("index", ["", "garbage ::: {{\n"])
def test_an_empty_or_garbage_index_falls_back_to_the_files_and_resumes(run, copy, index, capsys,
                                                                     monkeypatch):
    # Fault 4: an empty `checkpoint` file made train and eval fail with a ValueError.
    (copy / "checkpoint").write_text(index)
    assert checkpoints.newest(str(copy)) == str(copy / "ckpt-3")
    checkpoints.load_model(str(copy))
    # The rebuild's TensorFlow call logs a deprecation notice (once a process): kept off stderr.
    real, logged = tf.compat.v1.train.update_checkpoint_state, []
    def update_with_its_notice(*args, **kwargs):
        tf.get_logger().warning("update_checkpoint_state (from ...) is deprecated")
        return real(*args, **kwargs)
    monkeypatch.setattr(tf.compat.v1.train, "update_checkpoint_state", update_with_its_notice)
    handler = logging.Handler(logging.WARNING)
    handler.emit = logged.append
    tf.get_logger().addHandler(handler)
    try:
        ts, checkpointer = _open(copy, run.corpus)
    finally:
        tf.get_logger().removeHandler(handler)
    assert not logged, [r.getMessage() for r in logged]
    assert checkpointer.restore() == str(copy / "ckpt-3")
    assert "rebuilt it from 3 ckpt-N file(s)" in capsys.readouterr().err
    assert tf.train.latest_checkpoint(str(copy)) == str(copy / "ckpt-3")
    for got, want in zip(_weights(ts.model), _weights(run.model)):
        np.testing.assert_array_equal(got, want)
    assert checkpointer.save() == str(copy / "ckpt-4")
    # The rebuilt index keeps the files' times, so the oldest still give way (keep 3).
    assert sorted(p.name for p in copy.glob("ckpt-*.index")) == [
        "ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]


def test_checkpointer_skips_our_truncated_snapshot_and_falls_back(run, copy, capsys):
    _truncate(str(copy / "ckpt-3"))
    _, checkpointer = _open(copy, run.corpus)
    assert checkpointer.restore() == str(copy / "ckpt-2")
    err = capsys.readouterr().err
    assert f"warning: skipping unreadable checkpoint {copy / 'ckpt-3'}" in err


def test_checkpointer_falls_back_to_the_best_then_refuses_when_nothing_can_be_read(run, copy,
                                                                                   capsys):
    # Every ckpt-N unreadable: the best snapshot is the last good state. With it unreadable
    # too, a training would start afresh and overwrite them all: refused, nothing touched.
    for n in (1, 2, 3):
        _truncate(str(copy / f"ckpt-{n}"))
    best = checkpoints.newest(str(copy / "best"))
    _, checkpointer = _open(copy, run.corpus)
    assert checkpointer.restore() == best
    assert capsys.readouterr().err.count("warning: skipping unreadable checkpoint") == 3
    _corrupt(best)
    before = tree_digest(copy)
    _, checkpointer = _open(copy, run.corpus)
    with pytest.raises(CheckpointError, match=r"^none of the 4 checkpoints in .* \(best/ "
                                              r"included\) can be read; move them away"):
        checkpointer.restore()
    assert tree_digest(copy) == before


def test_checkpointer_refuses_another_runs_config(run, copy):
    ts = training.TrainState(dataclasses.replace(run.config, hidden_size=8), rnn_mode="basic")
    checkpointer = checkpoints.Checkpointer(
        str(copy), ts, checkpoints.run_info(ts.config, 0, run.corpus))
    with pytest.raises(CheckpointError, match=r"belongs to another run \(config.hidden_size: "
                                              r"16 -> 8\)"):
        checkpointer.restore()


def test_a_snapshot_from_before_the_data_hash_still_resumes(run, tmp_path):
    # Snapshots of older versions hold no data_hash: not compared, not refused.
    ts, _ = _open(tmp_path / "old", run.corpus)
    info = checkpoints.run_info(ts.config, 0, run.corpus)
    del info["data_hash"]
    checkpoints.Checkpointer(str(tmp_path / "old"), ts, info).save()
    _, checkpointer = _open(tmp_path / "old", run.corpus)
    assert checkpointer.restore().endswith("ckpt-1")


def test_checkpointer_refuses_a_directory_of_foreign_checkpoints_and_touches_nothing(run,
                                                                                    tmp_path):
    # Fault 20: another program's ckpt-1..3 were overwritten and deleted by a training.
    save_path = tmp_path / "theirs"
    _foreign_checkpoints(save_path)
    before = tree_digest(save_path)
    with pytest.raises(CheckpointError, match=r"holds checkpoint .*ckpt-\d, which was not "
                                              r"written by ptb_word_lm.py"):
        _open(save_path, run.corpus)
    with pytest.raises(CheckpointError, match=r"has no run_info: it was not written by"):
        checkpoints.read_run_info(str(save_path / "ckpt-3"))
    assert tree_digest(save_path) == before


def test_checkpointer_refuses_a_directory_with_an_unreadable_snapshot_index(run, copy):
    (copy / "ckpt-1.index").write_bytes(b"not an index")
    before = tree_digest(copy)
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*ckpt-1 .*left as it is"):
        _open(copy, run.corpus)
    assert tree_digest(copy) == before


def test_checkpointer_never_deletes_a_foreign_snapshot_the_index_lists(run, copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _foreign_checkpoints(elsewhere, count=1)
    index = (copy / "checkpoint").read_text()
    (copy / "checkpoint").write_text(
        index + f'all_model_checkpoint_paths: "{elsewhere / "ckpt-1"}"\n')
    with pytest.raises(CheckpointError, match=r"not written by ptb_word_lm.py"):
        _open(copy, run.corpus)
    assert (elsewhere / "ckpt-1.index").is_file()


def test_corrupt_checkpoint_prints_only_our_line(run, copy, capfd):
    # Fault 23: the error line came with ~28 TensorFlow warning lines.
    _corrupt(str(copy / "ckpt-3"))
    with pytest.raises(CheckpointError) as raised:
        checkpoints.load_model(str(copy), str(copy / "ckpt-3"))
    ts, checkpointer = _open(copy, run.corpus)
    with pytest.raises(CheckpointError) as restored:
        checkpointer.restore(str(copy / "ckpt-3"))
    assert checkpointer.restore() == str(copy / "ckpt-2")
    del ts, checkpointer
    gc.collect()  # TensorFlow warns of unrestored values when a checkpoint object dies
    out, err = capfd.readouterr()
    for error in (raised.value, restored.value):
        assert "\n" not in str(error) and "Checksum does not match" in str(error)
        assert "function_node" not in str(error)
    assert out == ""
    assert err.splitlines() == [f"warning: skipping unreadable checkpoint {copy / 'ckpt-3'}: "
                                f"{str(restored.value).split(': ', 1)[1]}"]


def test_checkpointer_removes_stale_temp_dirs_only_under_the_lock(run, copy):
    # Fault 24: a save killed half-way leaves ckpt-N_temp/, never removed.
    stale = [copy / "ckpt-4_temp", copy / "best" / "ckpt-2_temp"]
    for directory in stale:
        directory.mkdir()
        (directory / "part-00000-of-00001.index").write_bytes(b"partial")
    mine = copy / "ckpt-4_temporary"
    mine.mkdir()
    _open(copy, run.corpus)
    assert all(d.is_dir() for d in stale)  # not locked: another training may be saving
    with checkpoints.lock(str(copy)):
        _open(copy, run.corpus)
    assert not any(d.exists() for d in stale)
    assert mine.is_dir()


def _hold_lock(save_path):
    """A child process holding the lock of save_path until its stdin closes."""
    code = ("import sys, checkpoints\n"
            "with checkpoints.lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.read()\n")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", code, str(save_path)], cwd=REPO, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


@pytest.mark.parametrize("module, call, code, message", [
    # NFS without its lock daemon: flock's ENOLCK was a traceback.
    (checkpoints.fcntl, "flock", errno.ENOLCK,
     r"cannot lock .*\.lock: No locks available; choose a save_path on a filesystem with locks"),
    # ENOSPC from the pid's write was a bare OSError, which the driver named otherwise.
    (checkpoints.os, "pwrite", errno.ENOSPC,
     r"cannot write the lock file .*\.lock: No space left on device; choose a save_path with "
     r"free space"),
])
def test_a_lock_that_cannot_be_taken_or_written_is_one_error(tmp_path, monkeypatch, module, call,
                                                             code, message):
    def fails(*args):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(module, call, fails)
    with pytest.raises(CheckpointError, match=message):
        with checkpoints.lock(str(tmp_path / "run")):
            pass


def test_lock_second_holder_fails_naming_the_pid_then_a_killed_holders_lock_is_taken(tmp_path,
                                                                                   capsys):
    # Fault 1: two trainings on one save_path overwrote each other's ckpt-N.
    save_path = tmp_path / "run"
    child = _hold_lock(save_path)
    try:
        with pytest.raises(CheckpointError, match=rf"in use by another training \(pid "
                                                  rf"{child.pid}\)"):
            with checkpoints.lock(str(save_path)):
                pass
    finally:
        child.kill()  # SIGKILL: the kernel releases the flock, the pid stays in the file
        child.wait()
    with checkpoints.lock(str(save_path)):
        assert (save_path / checkpoints.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert f"taking over the lock of {save_path} from pid {child.pid}" in capsys.readouterr().err
    with checkpoints.lock(str(save_path)):  # released cleanly: no warning
        pass
    assert capsys.readouterr().err == ""


def test_load_model_of_a_recurrent_dropout_run_evaluates_on_every_kernel(tmp_path):
    # Recurrent dropout and weight drop act only in training: block (which cannot drop the
    # recurrent h) evaluates such a checkpoint, and gives what fused gives.
    (tmp_path / "corpus").mkdir()
    data_path = write_corpus(tmp_path / "corpus", TINY_TEXT * 4)
    corpus = reader.load_corpus(str(data_path))
    config = dataclasses.replace(_config(corpus), variational_dropout=True, keep_prob=0.8,
                                 recurrent_keep_prob=0.7, weight_drop=0.6)
    ts = training.TrainState(config, rnn_mode="fused", seed=0)
    checkpointer = checkpoints.Checkpointer(
        str(tmp_path / "run"), ts, checkpoints.run_info(config, 0, corpus))
    batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    training.run_epoch(ts, training.make_train_step(ts), batches)
    checkpointer.save()
    reader.save_vocab(corpus.word_to_id, str(tmp_path / "run" / checkpoints.VOCAB_FILE))
    valid = reader.ptb_producer(corpus.valid, 1, 1)
    perplexities = {}
    for rnn_mode in ("block", "fused"):
        model, _, loaded = checkpoints.load_model(str(tmp_path / "run"), rnn_mode=rnn_mode)
        assert loaded == config and model.rnn_mode == rnn_mode
        perplexities[rnn_mode] = training.evaluate(model, valid)
    np.testing.assert_allclose(perplexities["block"], perplexities["fused"], rtol=1e-5)
    with ts.evaluation_weights():
        np.testing.assert_allclose(training.evaluate(ts.model, valid), perplexities["fused"],
                                   rtol=1e-5)
