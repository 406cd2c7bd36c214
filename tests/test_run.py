"""In-process tests of run.train_and_evaluate: the tutorial's loop, resumes, refusals, faults."""

import dataclasses
import errno
import json
import math
import os
import re
import shutil
import signal
import sys
import types

import pytest
import tensorflow as tf

import checkpoints
import configs
import monitoring
import reader
import run
import training
from errors import UserError
from helpers import grammar_text, tensorboard_scalars, tree_digest
from rnn import loop_forms

OPTIONS = run.RunOptions(rnn_mode="basic", xla=False)


def _config(corpus, **changes):
    """The test config at a small, fast size, with the corpus's vocabulary."""
    fields = dict(batch_size=4, num_steps=5, hidden_size=16, vocab_size=corpus.vocab_size)
    return dataclasses.replace(configs.TEST, **{**fields, **changes})


@pytest.fixture
def corpus(make_corpus):
    return reader.load_corpus(str(make_corpus(grammar_text(400), grammar_text(60, seed=1),
                                              grammar_text(60, seed=2))))


def _lines(text, pattern):
    return [float(v) for v in re.findall(pattern, text, re.M)]


def test_run_trains_and_reports_like_the_tutorial(corpus, tmp_path, capsys):
    save = tmp_path / "run"
    config = _config(corpus, max_max_epoch=3, max_epoch=3)
    metrics = run.train_and_evaluate(config, corpus, str(save), OPTIONS)
    out = capsys.readouterr().out
    assert re.search(r"^Config: \{.*\"hidden_size\": 16", out, re.M)
    assert re.search(r"^rnn_mode: basic  xla: False  precision: float32  parameters: [\d,]+$",
                     out, re.M)
    assert "per-step recurrent products" not in out  # the fused kernel's, under XLA only
    assert re.search(r"^Epoch: 1 Learning rate: 1\.000$", out, re.M)
    assert len(re.findall(r"^0\.\d{3} perplexity: [\d.]+ speed: \d+ wps$", out, re.M)) >= 3
    train = _lines(out, r"^Epoch: \d Train Perplexity: ([\d.]+)$")
    valid = _lines(out, r"^Epoch: \d Valid Perplexity: ([\d.]+)$")
    test = _lines(out, r"^Test Perplexity: ([\d.]+)$")
    assert len(train) == len(valid) == 3 and len(test) == 1
    assert train[2] < 0.7 * train[0] and valid[2] < valid[0]
    assert json.loads((save / run.METRICS_FILE).read_text()) == json.loads(json.dumps(metrics))
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    parameters = int(re.search(r"parameters: ([\d,]+)$", out, re.M)[1].replace(",", ""))
    assert metrics["parameters"] == parameters
    assert metrics["data_hash"] == corpus.data_hash  # which text the epochs' words are of
    assert metrics["epochs"][2]["valid_perplexity"] == pytest.approx(valid[2], abs=1e-3)
    assert metrics["test_perplexity"] == pytest.approx(test[0], abs=1e-3)
    assert (save / "vocab.txt").read_text().split("\n")[0] == "the"
    assert list((save / "best").glob("ckpt-*.index"))


def test_run_rerun_of_finished_run_trains_nothing_and_tests_again(corpus, tmp_path, capsys):
    save = str(tmp_path / "run")
    first = run.train_and_evaluate(_config(corpus), corpus, save, OPTIONS)
    capsys.readouterr()
    again = run.train_and_evaluate(_config(corpus), corpus, save, OPTIONS)
    out = capsys.readouterr().out
    assert "Resuming from" in out and "Train Perplexity" not in out
    assert again["test_perplexity"] == pytest.approx(first["test_perplexity"], rel=1e-6)


def test_a_finished_run_goes_on_for_more_epochs_but_not_fewer(corpus, tmp_path, capsys):
    # More epochs leave those trained as they were; the resume was refused as another run's.
    save, config = str(tmp_path / "run"), _config(corpus)  # one epoch, the LR decays after it
    run.train_and_evaluate(config, corpus, save, OPTIONS)
    capsys.readouterr()
    metrics = run.train_and_evaluate(dataclasses.replace(config, max_max_epoch=2), corpus, save,
                                     OPTIONS)
    assert re.search(r"^Epoch: 2 Learning rate: 0\.500$", capsys.readouterr().out, re.M)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["config"]["max_max_epoch"] == 2
    with pytest.raises(checkpoints.CheckpointError, match=r"config\.max_max_epoch: 2 -> 1\)"):
        run.train_and_evaluate(config, corpus, save, OPTIONS)


@pytest.mark.parametrize("change, message", [
    (dict(config=dict(hidden_size=8)), r"belongs to another run \(config\.hidden_size: 16 -> 8\)"),
    (dict(options=dict(seed=7)), r"seed: 0 -> 7"),
])
def test_run_refuses_checkpoint_of_another_run_and_keeps_it(corpus, tmp_path, change, message):
    save = tmp_path / "run"
    run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    before = tree_digest(save)
    config = _config(corpus, **change.get("config", {}))
    options = dataclasses.replace(OPTIONS, **change.get("options", {}))
    with pytest.raises(checkpoints.CheckpointError, match=message):
        run.train_and_evaluate(config, corpus, str(save), options)
    assert tree_digest(save) == before


def test_run_refuses_checkpoint_of_another_vocabulary_or_text(make_corpus, tmp_path):
    save = tmp_path / "run"
    text = grammar_text(400)
    first = reader.load_corpus(str(make_corpus(text)))
    run.train_and_evaluate(_config(first), first, str(save), OPTIONS)
    before = tree_digest(save)
    # One word swapped for another: same vocab_size, another vocabulary.
    other = reader.load_corpus(str(make_corpus(text.replace("fish", "bird"))))
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"belongs to another run \(vocab_hash: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        run.train_and_evaluate(_config(other), other, str(save), OPTIONS)
    # The same vocabulary, other text (the lines in another order): another run's data too.
    lines = text.splitlines(keepends=True)
    shuffled = reader.load_corpus(str(make_corpus("".join(lines[1:] + lines[:1]))))
    assert shuffled.word_to_id == first.word_to_id
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"belongs to another run \(data_hash: '[0-9a-f]+' -> '[0-9a-f]+'\); "
                             r"use the same settings and data"):
        run.train_and_evaluate(_config(shuffled), shuffled, str(save), OPTIONS)
    # The same ids in the same order, split otherwise between validation and test: the hash
    # of the splits' ids alone could not tell.
    resplit = reader.load_corpus(str(make_corpus(text, text + lines[0], "".join(lines[1:]))))
    assert resplit.data_hash == first.data_hash
    with pytest.raises(checkpoints.CheckpointError,
                       match=r"belongs to another run \(split_sizes: \[\d+, \d+, \d+\] -> "):
        run.train_and_evaluate(_config(resplit), resplit, str(save), OPTIONS)
    assert tree_digest(save) == before


def test_a_save_path_tensorflow_would_read_as_a_pattern_is_refused(corpus, tmp_path):
    # "b[2]" trained to the end, then no resume or eval could read its checkpoints, and
    # "c[1]" resumed from another run's directory "c1".
    for name in ("b[2]", "runs*", "what?"):
        with pytest.raises(checkpoints.CheckpointError, match=r"reads as a pattern"):
            run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / name), OPTIONS)
        with pytest.raises(checkpoints.CheckpointError, match=r"reads as a pattern"):
            checkpoints.find_checkpoint(str(tmp_path / name))
    assert [p.name for p in tmp_path.iterdir()] == ["corpus0"]  # the fixture's, no run's


def test_a_run_whose_directory_is_deleted_under_it_stops_without_recreating_it(
        corpus, tmp_path, monkeypatch):
    # Its next save recreated the directory without a .lock: a second training took it and
    # the two wrote the same snapshots, index and metrics.
    save = tmp_path / "run"
    real_after_step = run._RunHooks.after_step

    def after_step(hooks, ts, outputs):
        if int(ts.global_step.numpy()) == 3 and save.exists():
            shutil.rmtree(save)
        return real_after_step(hooks, ts, outputs)
    monkeypatch.setattr(run._RunHooks, "after_step", after_step)
    with pytest.raises(checkpoints.CheckpointError, match=r"was deleted or replaced while this "
                                                          r"training held it; stopping without "
                                                          r"saving"):
        run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    assert not list(save.glob("**/ckpt-*"))


def test_a_full_disk_leaves_no_probe_file(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(checkpoints.os, "fsync", full)
    with pytest.raises(checkpoints.CheckpointError, match=r"No space left on device"):
        checkpoints.check_writable(str(tmp_path / "run"))
    assert list((tmp_path / "run").iterdir()) == []


def test_run_unwritable_save_path_fails_before_training(corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(checkpoints.CheckpointError, match=r"cannot write to save_path .*file/run"):
        run.train_and_evaluate(_config(corpus), corpus, str(blocker / "run"), OPTIONS)
    assert "Epoch:" not in capsys.readouterr().out
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("options, message", [
    (dict(keep_checkpoints=0), r"keep_checkpoints must be >= 1"),
    (dict(keep_checkpoints=-3), r"keep_checkpoints must be >= 1"),
    (dict(checkpoint_every_minutes=-1.0), r"checkpoint_every_minutes must be >= 0 \(0: off\)"),
    (dict(checkpoint_every_minutes=math.nan), r"checkpoint_every_minutes must be >= 0"),
    (dict(checkpoint_every_steps=-5), r"checkpoint_every_steps must be >= 0 \(0: off\)"),
    (dict(seed=2**63), r"seed 9223372036854775808 is outside the 64-bit range"),
    (dict(seed=-2**63 - 1), r"outside the 64-bit range"),
    (dict(progress="fancy"), r"progress must be one of plain, tty"),
    (dict(rnn_mode="block", xla=True), r"--rnn_mode=block cannot run under --xla"),
])
def test_run_options_refuse_values_that_cannot_work(options, message):
    with pytest.raises(UserError, match=message):
        run.RunOptions(**options)


def test_run_options_accept_the_int64_range_and_off_values():
    for seed in (-2**63, 2**63 - 1):
        assert run.RunOptions(seed=seed, checkpoint_every_minutes=0,
                              checkpoint_every_steps=0).seed == seed


def test_run_refuses_a_model_too_big_for_memory_before_building_it(corpus, tmp_path):
    config = _config(corpus, hidden_size=60000)
    with pytest.raises(run.RunError, match=r"needs at least [\d,.]+ GiB to train .* this process "
                                           r"may use [\d,.]+ GiB .*; lower hidden_size"):
        run.train_and_evaluate(config, corpus, str(tmp_path / "run"), OPTIONS)
    assert not (tmp_path / "run").exists()


def test_run_refuses_a_precision_autos_kernel_cannot_train_before_writing(corpus, tmp_path):
    # auto picks basic for a GRU, which bfloat16 cannot train: known only with the config,
    # it was refused after save_path and its .lock were made.
    config = _config(corpus, cell="gru")
    options = run.RunOptions(rnn_mode="auto", precision="bfloat16")
    with pytest.raises(UserError, match=r"--precision=bfloat16 runs only with --rnn_mode=fused .*"
                                        r"\(--rnn_mode=auto's choice for cell=gru\)$"):
        run.train_and_evaluate(config, corpus, str(tmp_path / "run"), options)
    assert not (tmp_path / "run").exists()


def test_training_memory_estimate_counts_weights_and_the_logits():
    config = dataclasses.replace(configs.SMALL)
    # 2 x 6.6M parameters (weights and gradients), 3 x 400 words x 10,000 logits, LSTM activations.
    parameters = 2 * 10000 * 200 + 10000 + 2 * (8 * 200 * 200 + 4 * 200)
    assert run.training_memory_bytes(config) == 4 * (2 * parameters + 3 * 400 * 10000
                                                     + 12 * 2 * 400 * 200)
    run.check_memory(config)  # the small model fits anywhere
    with pytest.raises(run.RunError, match=r"this process may use 0.1 GiB \(the machine.s memory, "
                                           r"or its cgroup.s limit if lower\)"):
        run.check_memory(config, available=2**26)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_run_full_disk_writing_the_vocabulary_is_one_error(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "save_vocab", _no_space)
    with pytest.raises(run.RunError, match=r"cannot write .*vocab\.txt: No space left on device"):
        run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), OPTIONS)


def test_a_vocabulary_write_killed_half_way_leaves_one_file_the_next_run_replaces(
        corpus, tmp_path, monkeypatch):
    save = tmp_path / "run"
    save.mkdir()
    (save / "vocab.txt.tmp").write_text("half of a vocabu")  # what a SIGKILL mid-write leaves

    def stop_after_opening(*args):
        raise RuntimeError("stop here")

    monkeypatch.setattr(run, "_train_epochs", stop_after_opening)
    with pytest.raises(RuntimeError, match="stop here"):
        run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    assert reader.load_vocab(str(save / "vocab.txt")) == corpus.word_to_id
    assert sorted(p.name for p in save.iterdir() if "vocab" in p.name) == ["vocab.txt"]


def test_run_full_disk_writing_metrics_keeps_the_last_good_state(corpus, tmp_path, monkeypatch):
    save = tmp_path / "run"
    config = _config(corpus, max_max_epoch=2, max_epoch=2)
    real_fsync, calls = os.fsync, []

    def fail_from_the_second_write(fd):  # metrics.json is written through metrics.json.tmp
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == f"{run.METRICS_FILE}.tmp":
            calls.append(1)
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fail_from_the_second_write)
    with pytest.raises(run.RunError, match=r"cannot write .*metrics\.json: No space left"):
        run.train_and_evaluate(config, corpus, str(save), OPTIONS)
    epochs = json.loads((save / run.METRICS_FILE).read_text())["epochs"]
    assert [e["epoch"] for e in epochs] == [1]  # the last good file, not a half-written one
    assert not (save / f"{run.METRICS_FILE}.tmp").exists()  # no half-written copy left
    # Epoch 2's checkpoint was written before its metrics: the rerun only tests.
    monkeypatch.setattr(os, "fsync", real_fsync)
    metrics = run.train_and_evaluate(config, corpus, str(save), OPTIONS)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert math.isfinite(metrics["test_perplexity"])


def test_run_full_disk_writing_tensorboard_is_one_error(corpus, tmp_path, monkeypatch):
    def failing_writer(log_dir):
        raise training.tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(monitoring.tf.summary, "create_file_writer", failing_writer)
    with pytest.raises(monitoring.SummaryError,
                       match=r"cannot write TensorBoard scalars in .*tensorboard: No space left"):
        run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), OPTIONS)


def test_a_signal_after_the_test_is_recorded_ends_the_run_as_it_would(corpus, tmp_path,
                                                                       monkeypatch, capsys):
    # It raised Stopped ("run the same command to run the test") and exit 1, all done.
    close = monitoring.Summaries.close
    monkeypatch.setattr(monitoring.Summaries, "close", lambda summaries: (
        os.kill(os.getpid(), signal.SIGTERM), close(summaries)))
    metrics = run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), OPTIONS)
    assert math.isfinite(metrics["test_perplexity"])
    assert "the run is complete; exiting" in capsys.readouterr().err


def test_steps_replayed_after_a_kill_are_not_drawn_twice_in_tensorboard(corpus, tmp_path):
    # A kill after the reports of epoch 2 but before its snapshot (its snapshot removed): the
    # resumed run's epoch 2 wrote every one of its points a second time, and a rerun of the
    # finished run its test perplexity again.
    save = tmp_path / "run"
    config = _config(corpus, max_max_epoch=2)
    options = dataclasses.replace(OPTIONS, keep_checkpoints=9)
    run.train_and_evaluate(config, corpus, str(save), options)
    first = tensorboard_scalars(save / "tensorboard")
    for path in (save / "best").iterdir():
        path.unlink()
    for path in save.glob(f"{os.path.basename(checkpoints.newest(str(save)))}.*"):
        path.unlink()
    run.train_and_evaluate(config, corpus, str(save), options)
    run.train_and_evaluate(config, corpus, str(save), options)
    again = tensorboard_scalars(save / "tensorboard")
    assert {tag: [step for step, _ in points] for tag, points in again.items()} == \
        {tag: [step for step, _ in points] for tag, points in first.items()}


def test_a_signal_while_exporting_says_the_test_is_recorded_and_the_rerun_exports(
        corpus, tmp_path, monkeypatch):
    # It said "run the same command to run the test", as if the test had not been recorded.
    save_model = run.export.export_saved_model

    def killed_while_exporting(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        return save_model(*args)
    monkeypatch.setattr(run.export, "export_saved_model", killed_while_exporting)
    options = dataclasses.replace(OPTIONS, export_dir=str(tmp_path / "lm"))
    with pytest.raises(run.Stopped, match=r"^Stopped by signal 15 while exporting, after the "
                                          r"test \(its perplexity is in .*metrics.json\)"):
        run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), options)
    metrics = json.loads((tmp_path / "run" / run.METRICS_FILE).read_text())
    assert math.isfinite(metrics["test_perplexity"]) and not (tmp_path / "lm").exists()
    monkeypatch.setattr(run.export, "export_saved_model", save_model)
    run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), options)
    assert (tmp_path / "lm" / "saved_model.pb").is_file()


def test_a_fresh_run_sets_an_earlier_runs_tensorboard_scalars_apart(corpus, tmp_path):
    # Checkpoints deleted, tensorboard/ kept: the new run's points were mixed into the old
    # run's curves, and once it resumed, those up to the old run's last step were dropped.
    save = tmp_path / "run"
    run.train_and_evaluate(_config(corpus, max_max_epoch=2), corpus, str(save), OPTIONS)
    earlier = tensorboard_scalars(save / "tensorboard")
    for path in [*save.glob("ckpt-*"), save / "checkpoint", *(save / "best").iterdir()]:
        path.unlink()
    run.train_and_evaluate(_config(corpus, max_max_epoch=1), corpus, str(save), OPTIONS)
    run.train_and_evaluate(_config(corpus, max_max_epoch=2), corpus, str(save), OPTIONS)
    [aside] = (save / "tensorboard").glob("earlier-*")
    assert tensorboard_scalars(aside) == earlier
    steps = lambda scalars: [step for step, _ in scalars["train/perplexity"]]  # noqa: E731
    assert steps(tensorboard_scalars(save / "tensorboard")) == steps(earlier)


def test_a_tensorboard_write_failing_at_an_epochs_end_keeps_the_epoch(corpus, tmp_path,
                                                                       monkeypatch):
    # The validation's scalar was written before the epoch's snapshot: the epoch was lost.
    write = monitoring.Summaries.write

    def fails_at_the_validation(summaries, step, values):
        if "valid/perplexity" in values:
            raise monitoring.SummaryError("cannot write TensorBoard scalars")
        write(summaries, step, values)
    monkeypatch.setattr(monitoring.Summaries, "write", fails_at_the_validation)
    with pytest.raises(monitoring.SummaryError):
        run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"), OPTIONS)
    assert checkpoints.newest(str(tmp_path / "run")) is not None


@pytest.mark.parametrize("changes", [dict(init_scale=1e30), dict(learning_rate=1e4)])
def test_run_huge_finite_cost_reports_inf_perplexity(corpus, tmp_path, capsys, changes):
    metrics = run.train_and_evaluate(_config(corpus, **changes), corpus, str(tmp_path / "run"),
                                     OPTIONS)
    out = capsys.readouterr().out
    for line in ("Epoch: 1 Train Perplexity: inf", "Epoch: 1 Valid Perplexity: inf",
                 "Test Perplexity: inf"):
        assert re.search(rf"^{line}$", out, re.M), out
    assert metrics["test_perplexity"] == math.inf
    # metrics.json stays valid JSON: a non-finite number is written as null.
    assert json.loads((tmp_path / "run" / run.METRICS_FILE).read_text())["test_perplexity"] is None
    assert list((tmp_path / "run" / "best").glob("ckpt-*.index"))  # the first epoch is the best


def test_perplexity_of_a_huge_finite_cost_is_inf():
    assert training.perplexity(1e6) == math.inf
    assert training.perplexity(math.log(50.0)) == pytest.approx(50.0)


def test_run_sigterm_during_the_test_stops_at_once_and_the_rerun_tests(corpus, tmp_path,
                                                                       monkeypatch, capsys):
    save = tmp_path / "run"
    real = training.stream_perplexity
    calls = []

    def test_then_signal(*args, **kwargs):
        calls.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)  # a real test would still be running; it must not finish

    monkeypatch.setattr(training, "stream_perplexity", test_then_signal)
    with pytest.raises(run.Stopped, match=r"Stopped by signal 15 after training; the trained "
                                          r"weights are saved in .*run the same command"):
        run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    assert "test_perplexity" not in json.loads((save / run.METRICS_FILE).read_text())
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers were put back
    monkeypatch.setattr(training, "stream_perplexity", real)
    capsys.readouterr()
    metrics = run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    out = capsys.readouterr().out
    assert "Train Perplexity" not in out and "Test Perplexity" in out
    assert math.isfinite(metrics["test_perplexity"]) and len(calls) == 1


def test_run_holds_the_run_directory_lock(corpus, tmp_path, monkeypatch):
    save = tmp_path / "run"
    held = []
    real_open_run = run._open_run

    def open_run_and_try_another(*args, **kwargs):
        with pytest.raises(checkpoints.CheckpointError, match=rf"in use by another training "
                                                              rf"\(pid {os.getpid()}\)"):
            with checkpoints.lock(str(save)):
                pass
        held.append(True)
        return real_open_run(*args, **kwargs)

    monkeypatch.setattr(run, "_open_run", open_run_and_try_another)
    run.train_and_evaluate(_config(corpus), corpus, str(save), OPTIONS)
    assert held
    with checkpoints.lock(str(save)):  # released when the run ended
        pass


def test_run_under_xla_with_the_fused_kernel_says_its_per_step_products(corpus, tmp_path,
                                                                         capsys, monkeypatch):
    # A rule that contracts the backward loop's rows from W_h of 16 hidden units (4 KB).
    monkeypatch.setattr(loop_forms, "CHOSEN", loop_forms.LoopForms(
        copying=4097, backward=4096, own_forward=4097))
    options = dataclasses.replace(OPTIONS, rnn_mode="fused", xla=True)
    run.train_and_evaluate(_config(corpus, max_max_epoch=1, max_epoch=1), corpus,
                           str(tmp_path / "run"), options)
    assert re.search(r"^per-step recurrent products: forward as they are, backward rows "
                     r"contracted, evaluation as they are \((avx512f|no avx512f|gpu)\)$",
                     capsys.readouterr().out, re.M)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_run_auto_picks_the_kernel_that_runs_the_cell(corpus, tmp_path, capsys, cell):
    options = dataclasses.replace(OPTIONS, rnn_mode="auto", xla=None)
    metrics = run.train_and_evaluate(_config(corpus, cell=cell, tie_embeddings=True), corpus,
                                     str(tmp_path / "run"), options)
    assert re.search(r"^rnn_mode: basic  xla: True  precision: float32  parameters: ",
                     capsys.readouterr().out, re.M)
    assert math.isfinite(metrics["test_perplexity"])
    model, _, config = checkpoints.load_model(str(tmp_path / "run"))
    assert (config.cell, model.rnn_mode) == (cell, "basic")


def test_an_epoch_end_snapshot_restarts_the_periodic_interval(corpus, tmp_path, monkeypatch):
    # Each epoch end saves, and the next periodic snapshot is then due a whole interval
    # later (a periodic save seconds after an epoch's would push the epoch ends out).
    resets = []
    saved = run._RunHooks.saved
    monkeypatch.setattr(run._RunHooks, "saved",
                        lambda hooks: (resets.append(hooks._last_save), saved(hooks)))
    options = dataclasses.replace(OPTIONS, checkpoint_every_minutes=0)  # epoch ends only
    run.train_and_evaluate(_config(corpus, max_max_epoch=2, max_epoch=1), corpus,
                           str(tmp_path / "run"), options)
    assert len(resets) == 2


def test_a_periodic_save_agreed_a_step_later_is_written_once(monkeypatch):
    # Under a strategy the workers' wishes are agreed with the next step; the wish must not
    # be made again meanwhile, or every periodic snapshot is written twice.
    class Delayed:  # as distribute's _DataParallelStep.agree
        pending = (False, False, False)

        def agree(self, outputs, *wishes):
            agreed, self.pending = self.pending, wishes
            return agreed

    clock, saves = [0.0], []
    monkeypatch.setattr(run.time, "monotonic", lambda: clock[0])
    ts = types.SimpleNamespace(check_finite=lambda: None,
                               global_step=types.SimpleNamespace(numpy=lambda: len(clock)),
                               step=types.SimpleNamespace(numpy=lambda: len(clock)))
    hooks = run._RunHooks(
        types.SimpleNamespace(tick=lambda ts: None), None,
        types.SimpleNamespace(save=lambda: saves.append(clock[0]),
                              set_epoch_seconds=lambda seconds: None),
        types.SimpleNamespace(signum=None),
        dataclasses.replace(OPTIONS, checkpoint_every_minutes=0.05), Delayed(),  # every 3 s
        epoch_size=100)
    hooks.start_epoch(0.0)
    for _ in range(20):
        clock[0] += 1.0
        hooks.after_step(ts, None)
    assert saves == [5.0, 10.0, 15.0, 20.0]  # wished at 4, 9, ...: once each, a step later


def test_a_periodic_save_due_as_the_budget_runs_out_is_left_to_the_budgets_stop(monkeypatch):
    # The budget's stop is validated and saved as an epoch's end: a periodic snapshot at the
    # same step was a second copy of it.
    clock, saves = [0.0], []
    monkeypatch.setattr(run.time, "monotonic", lambda: clock[0])
    step = types.SimpleNamespace(numpy=lambda: int(clock[0]))
    ts = types.SimpleNamespace(check_finite=lambda: None, global_step=step, step=step)
    hooks = run._RunHooks(
        types.SimpleNamespace(tick=lambda ts: None), None,
        types.SimpleNamespace(save=lambda: saves.append(clock[0]),
                              set_epoch_seconds=lambda seconds: None),
        types.SimpleNamespace(signum=None),
        dataclasses.replace(OPTIONS, checkpoint_every_steps=3, max_minutes=0.1),  # 6 s
        types.SimpleNamespace(agree=lambda outputs, *wishes: wishes), epoch_size=100)
    hooks.start_epoch(0.0)
    stops = []
    for _ in range(6):
        clock[0] += 1.0
        stops.append(hooks.after_step(ts, None))
    assert stops == [False] * 5 + [True] and saves == [3.0]  # not at 6.0, the budget's stop


def test_a_periodic_save_due_on_an_epochs_last_step_is_the_epochs_own(corpus, tmp_path):
    # The epoch's end saves anyway: a periodic snapshot at the same step was a second copy.
    config = _config(corpus, max_max_epoch=2, max_epoch=2)
    epoch_size = run._batches(corpus, "train", config).epoch_size
    options = dataclasses.replace(OPTIONS, checkpoint_every_steps=epoch_size, keep_checkpoints=9)
    run.train_and_evaluate(config, corpus, str(tmp_path / "run"), options)
    steps = sorted(int(tf.train.load_checkpoint(str(p)[:-len(".index")]).get_tensor(
        "state/global_step/.ATTRIBUTES/VARIABLE_VALUE"))
        for p in (tmp_path / "run").glob("ckpt-*.index"))
    assert steps == [epoch_size, 2 * epoch_size]


def test_time_before_a_signal_counts_in_the_resumed_epoch_and_the_budget(corpus, tmp_path,
                                                                         monkeypatch, capsys):
    # The clock jumps 1000 s at step 3, then SIGTERM: the snapshot records those seconds, so
    # the resumed epoch's train_seconds and a --max_minutes budget count them.
    save, real_time, offset = str(tmp_path / "run"), run.time.monotonic, [0.0]
    monkeypatch.setattr(run.time, "monotonic", lambda: real_time() + offset[0])
    real_after_step = run._RunHooks.after_step

    def after_step(hooks, ts, outputs):
        if int(ts.global_step.numpy()) == 3 and not offset[0]:
            offset[0] = 1000.0
            os.kill(os.getpid(), signal.SIGTERM)
        return real_after_step(hooks, ts, outputs)
    monkeypatch.setattr(run._RunHooks, "after_step", after_step)
    config = _config(corpus, max_max_epoch=1)
    with pytest.raises(run.Stopped, match=r"Stopped at epoch 1 step 3"):
        run.train_and_evaluate(config, corpus, save, OPTIONS)
    # A budget of 10 minutes is spent already: nothing more is trained, and the part trained
    # is validated and recorded as a budget's stop.
    capsys.readouterr()
    metrics = run.train_and_evaluate(config, corpus, save,
                                     dataclasses.replace(OPTIONS, max_minutes=10))
    out = capsys.readouterr().out
    assert "Resuming from" in out and "Learning rate" not in out
    assert re.search(r"^Time budget of 10 minutes spent at epoch 1 \(\d+\.\d%\).*\n"
                     r"Epoch: 1 Train Perplexity: .*\nEpoch: 1 Valid Perplexity: ", out, re.M), out
    [part] = metrics["epochs"]
    assert 1000 <= part["train_seconds"] < 1000 + 60 and 0 < part["fraction"] < 1
    metrics = run.train_and_evaluate(config, corpus, save, OPTIONS)
    [epoch] = metrics["epochs"]
    assert 1000 <= epoch["train_seconds"] < 1000 + 60 and "fraction" not in epoch


def test_a_budget_stopped_parts_validation_stays_the_one_to_beat(corpus, tmp_path,
                                                                 monkeypatch):
    # Validations scripted 100 (the part a budget stopped, saved as best), 105 (that epoch
    # finished on resume), 102 (the next): best/ took the 102, worse than the part's 100.
    save, real_time, offset = str(tmp_path / "run"), run.time.monotonic, [0.0]
    monkeypatch.setattr(run.time, "monotonic", lambda: real_time() + offset[0])
    real_after_step, scripted = run._RunHooks.after_step, iter([100.0, 105.0, 102.0])

    def after_step(hooks, ts, outputs):
        if int(ts.global_step.numpy()) == 3 and not offset[0]:
            offset[0] = 1000.0  # the 10 minutes' budget runs out here
        return real_after_step(hooks, ts, outputs)
    monkeypatch.setattr(run._RunHooks, "after_step", after_step)
    end_of_epoch = run._end_of_epoch
    monkeypatch.setattr(run, "_end_of_epoch", lambda *args: end_of_epoch(
        *args[:-1], lambda: next(scripted)))
    config = _config(corpus, max_max_epoch=2)
    run.train_and_evaluate(config, corpus, save, dataclasses.replace(OPTIONS, max_minutes=10))
    metrics = run.train_and_evaluate(config, corpus, save, OPTIONS)
    assert [(e["valid_perplexity"], e.get("part_valid_perplexity")) for e in metrics["epochs"]] \
        == [(105.0, 100.0), (102.0, None)]
    [best] = (tmp_path / "run" / "best").glob("ckpt-*.index")
    assert tf.train.load_checkpoint(str(best)[:-len(".index")]).get_tensor(
        "state/global_step/.ATTRIBUTES/VARIABLE_VALUE") == 3


def test_a_nan_step_as_the_budget_runs_out_is_not_saved(corpus, tmp_path, monkeypatch):
    # The budget's stop comes between the steps' finiteness checks (at reports and epoch
    # ends): a NaN there must fail the run, not be checkpointed for every resume to refuse.
    save, real_time, offset = str(tmp_path / "run"), run.time.monotonic, [0.0]
    monkeypatch.setattr(run.time, "monotonic", lambda: real_time() + offset[0])
    real_after_step = run._RunHooks.after_step

    def after_step(hooks, ts, outputs):
        if int(ts.global_step.numpy()) == 2:
            ts.bad_step.assign(2)  # as apply_gradients marks a non-finite cost
            offset[0] = 1000.0
        return real_after_step(hooks, ts, outputs)
    monkeypatch.setattr(run._RunHooks, "after_step", after_step)
    with pytest.raises(training.Diverged, match=r"global step 2\); stopped without saving: "
                                                r"lower learning_rate or max_grad_norm"):
        run.train_and_evaluate(_config(corpus), corpus, save,
                               dataclasses.replace(OPTIONS, max_minutes=1,
                                                   checkpoint_every_minutes=0))
    assert checkpoints.newest(save) is None


def test_an_output_whose_reader_went_away_saves_and_stops_as_a_signal(corpus, tmp_path,
                                                                       monkeypatch):
    # `... 2>&1 | tee log` and Ctrl-C: tee dies of the same SIGINT, and the next line
    # written fails with EPIPE. The run must save at the next step, not die of the write.
    class Gone:
        def __init__(self):
            self.lines = []

        def write(self, text):
            if self.lines and "Learning rate" in "".join(self.lines):
                raise BrokenPipeError(32, "Broken pipe")
            self.lines.append(text)
            return len(text)

        def flush(self):
            pass
    monkeypatch.setattr(sys, "stdout", Gone())
    save = str(tmp_path / "run")
    with pytest.raises(run.Stopped, match=r"^Stopped at epoch 1 step 1; checkpoint saved"):
        run.train_and_evaluate(_config(corpus), corpus, save, OPTIONS)
    assert isinstance(sys.stdout, Gone)  # put back
    model, _, _ = checkpoints.load_model(save, rnn_mode="basic")  # the step-1 snapshot
    assert checkpoints.newest(save).endswith("ckpt-1")


def test_a_signal_while_a_run_starts_stops_it_at_once(corpus, tmp_path, monkeypatch):
    # Building, restoring, tracing and compiling can outlast a scheduler's grace period:
    # before the first step there is nothing unsaved, so the first signal stops at once.
    save = str(tmp_path / "run")
    config = _config(corpus, max_max_epoch=1)
    real_open = run._open_run

    def open_then_signal(*args):
        opened = real_open(*args)
        os.kill(os.getpid(), signal.SIGINT)
        return opened
    with monkeypatch.context() as patch:
        patch.setattr(run, "_open_run", open_then_signal)
        with pytest.raises(run.Stopped, match=r"^Stopped by signal 2 while starting, before any "
                                              r"step; .*run the same command to go on"):
            run.train_and_evaluate(config, corpus, save, OPTIONS)
    assert checkpoints.newest(save) is None
    first = run.train_and_evaluate(config, corpus, save, OPTIONS)
    # A finished run reopened (only its test left) stops too, rather than running the test.
    monkeypatch.setattr(run, "_open_run", open_then_signal)
    with pytest.raises(run.Stopped, match=r"^Stopped by signal 2 while starting"):
        run.train_and_evaluate(config, corpus, save, OPTIONS)
    metrics = json.loads((tmp_path / "run" / run.METRICS_FILE).read_text())
    assert metrics["test_perplexity"] == first["test_perplexity"]


@pytest.mark.parametrize("export", [".", "..", "best", "tensorboard"])
def test_an_export_dir_that_would_replace_the_runs_files_is_refused_first(corpus, tmp_path,
                                                                         export):
    save = tmp_path / "runs" / "small"
    options = dataclasses.replace(OPTIONS, export_dir=str(save / export))
    with pytest.raises(run.RunError, match=r"would replace the run's own files in save_path"):
        run.train_and_evaluate(_config(corpus), corpus, str(save), options)
    assert not save.exists()
    run._check_export_dir(str(save / "export"), str(save))  # a new directory inside: fine
    run._check_export_dir(str(tmp_path / "export"), str(save))


def test_a_save_path_inside_another_runs_best_or_tensorboard_is_refused(corpus, tmp_path):
    # Its snapshots in best/ were deleted by the second run's, and the two shared an index.
    first = tmp_path / "run"
    run.train_and_evaluate(_config(corpus), corpus, str(first), OPTIONS)
    before = tree_digest(first)
    for inside, own in [("best", "best"), ("best/again", "best"), ("tensorboard", "tensorboard")]:
        with pytest.raises(run.RunError, match=rf"^save_path .* is inside {first}/{own}, the "
                                               rf"{own}/ of the run in {first}; choose a "
                                               rf"directory outside that run$"):
            run.train_and_evaluate(_config(corpus), corpus, str(first / inside), OPTIONS)
    assert tree_digest(first) == before
    run._check_not_in_another_run(str(first / "new"))  # a new directory inside: fine


def test_a_split_too_short_for_the_batches_is_named(corpus):
    config = _config(corpus, num_steps=100)  # the training split holds it; validation not
    assert run._batches(corpus, "train", config).epoch_size > 0
    with pytest.raises(reader.DataError, match=r"^the valid split: epoch_size == 0"):
        run._batches(corpus, "valid", config)


