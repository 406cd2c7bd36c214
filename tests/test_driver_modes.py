"""End-to-end tests of the driver after training: eval, generate, score, export, TensorBoard."""

import csv
import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import inference
import reader
import training
from helpers import (REPO, SMALL_RUN, assert_exit_error, assert_user_error,
                     driver_exit_in_process, grammar_text, run_driver, tensorboard_scalars)

# Not PTB's file names, and a capped vocabulary: the modes must use what training stored.
FILES = ["--train_file=train.txt", "--valid_file=valid.txt", "--test_file=test.txt"]
MAX_VOCAB = 10
TAGS = {"train/perplexity", "train/learning_rate", "train/grad_norm", "train/words_per_second",
        "valid/perplexity", "test/perplexity"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run through the driver, exported after training; reused by every test."""
    data = tmp_path_factory.mktemp("corpus")
    for name, text in [("train.txt", grammar_text(300)), ("valid.txt", grammar_text(40, seed=1)),
                       ("test.txt", grammar_text(40, seed=2))]:
        (data / name).write_text(text)
    save = tmp_path_factory.mktemp("run") / "run"
    export_dir = save.parent / "export"
    data_flags = [f"--data_path={data}", *FILES]
    result = run_driver(*SMALL_RUN, *data_flags, f"--save_path={save}",
                        f"--max_vocab_size={MAX_VOCAB}", "--override=max_max_epoch=2",
                        f"--export_dir={export_dir}")
    assert result.returncode == 0, result.stderr
    return dict(data=data, save=save, export_dir=export_dir, stdout=result.stdout,
                flags=[*data_flags, f"--save_path={save}"])


@pytest.fixture(scope="module")
def loaded(trained):
    return checkpoints.load_model(str(trained["save"]))


def test_driver_train_writes_tensorboard_scalars(trained):
    scalars = tensorboard_scalars(trained["save"] / "tensorboard")
    assert TAGS <= set(scalars)
    printed = [float(v) for v in re.findall(r"^Epoch: \d Valid Perplexity: ([\d.]+)$",
                                            trained["stdout"], re.M)]
    assert [v for _, v in scalars["valid/perplexity"]] == pytest.approx(printed, abs=1e-3)
    steps = [s for s, _ in scalars["train/perplexity"]]
    assert steps == sorted(steps) and steps[0] > 0 and len(steps) >= 10
    assert scalars["valid/perplexity"][-1][0] == steps[-1]  # global step at the epoch's end
    assert all(v > 0 for _, v in scalars["train/grad_norm"])
    assert [v for _, v in scalars["train/learning_rate"]][-1] == pytest.approx(0.5)


def test_driver_train_with_other_file_names_stores_capped_vocabulary(trained, loaded):
    _, word_to_id, config = loaded
    assert len(word_to_id) == config.vocab_size == MAX_VOCAB and reader.UNK in word_to_id
    assert reader.load_vocab(str(trained["save"] / "vocab.txt")) == word_to_id


def test_driver_eval_equals_stream_perplexity(trained, loaded):
    result = run_driver(*trained["flags"], "--mode=eval")
    assert result.returncode == 0, result.stderr
    model, word_to_id, _ = loaded
    corpus = reader.load_corpus(str(trained["data"]), "train.txt", "valid.txt", "test.txt",
                                word_to_id=word_to_id)
    expected = training.stream_perplexity(model, corpus.test)
    got = float(re.search(r"^Perplexity: ([\d.]+)$", result.stdout, re.M).group(1))
    assert got == pytest.approx(expected, abs=1e-3)
    test_ppl = float(re.search(r"^Test Perplexity: ([\d.]+)$", trained["stdout"], re.M).group(1))
    assert got == pytest.approx(test_ppl, abs=2e-3)  # what training printed, same weights
    # A tiny model's recurrent weights fit any cache: its stream overlaps, and says so.
    assert training.overlaps_stream_losses(model)
    assert "softmax beside the next chunk's recurrence)" in trained["stdout"]
    words = reader.read_words(str(trained["data"] / "test.txt"))
    unknown = sum(w not in word_to_id for w in words)
    assert unknown > 0  # the capped vocabulary leaves some test words out
    assert re.search(rf"^Words: {len(words)} .*; {unknown} not in the vocabulary, read as <unk>; "
                     rf"the perplexity is over the {len(words) - 1} after the first", result.stdout,
                     re.M)


def test_driver_eval_warns_when_the_data_is_not_the_runs_text(trained, tmp_path, capsys):
    # The default --data_path is PTB: a model of another corpus was evaluated on it silently.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (other / name).write_text(grammar_text(40, seed=7))
    flags = [f"--save_path={trained['save']}", "--mode=eval", *FILES]
    assert driver_exit_in_process(*flags, f"--data_path={trained['data']}") == 0
    assert driver_exit_in_process(*flags, f"--data_path={other}") == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "not the text" in line]
    assert warnings == [f"warning: the text in {other} is not the text the run was trained on "
                        f"(its splits differ); the perplexity below is of this text"]


def test_driver_eval_names_the_data_path_when_its_words_are_not_the_vocabularys(tmp_path,
                                                                                capsys):
    # A run without <unk> evaluated on other text: the error said to retrain with
    # --max_vocab_size, and the warning that the text is not the run's was never printed.
    text = " the cat sat on the mat \n the dog sat on the log \n" * 30
    data, other = tmp_path / "data", tmp_path / "other"
    for directory, words in ((data, text), (other, text + " a zebra sat \n")):
        directory.mkdir()
        for name in ("train.txt", "valid.txt", "test.txt"):
            (directory / name).write_text(words)
    save = tmp_path / "run"
    assert driver_exit_in_process(*SMALL_RUN, f"--data_path={data}", *FILES,
                                  f"--save_path={save}", "--override=max_max_epoch=1") == 0
    capsys.readouterr()
    code = driver_exit_in_process(f"--save_path={save}", "--mode=eval", f"--data_path={other}",
                                  *FILES)
    assert_exit_error(code, r"are not in the vocabulary and it has no <unk>")
    warnings = [line for line in capsys.readouterr().err.splitlines() if "not the text" in line]
    assert warnings == [f"warning: the text in {other} is not the text the run was trained on "
                        f"(words its vocabulary lacks); pass the --data_path it trained on"]


def test_driver_eval_falls_back_past_an_unreadable_newest_checkpoint(trained, tmp_path,
                                                                    capsys):
    # The data check read the newest snapshot's run_info, and failed where eval had not.
    run_dir = tmp_path / "run"
    shutil.copytree(trained["save"], run_dir)
    newest = checkpoints.newest(str(run_dir))
    with open(f"{newest}.index", "wb") as index:
        index.write(b"garbage")
    code = driver_exit_in_process(f"--save_path={run_dir}", "--mode=eval",
                                  f"--data_path={trained['data']}", *FILES)
    assert code == 0
    assert "warning: skipping unreadable checkpoint" in capsys.readouterr().err


def test_driver_generate_repeats_with_its_seed_and_warns_once_about_unknown_words(trained,
                                                                                   loaded):
    args = [*trained["flags"], "--mode=generate", "--prompt=the zebra zebra", "--num_words=25",
            "--stop_at_eos=false"]
    # Seed 1 twice: this process's sampling, then the command's.
    first = run_driver(*args, "--seed=1")
    other = run_driver(*args, "--seed=2")
    for result in (first, other):
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert warnings == ["warning: not in the vocabulary, read as <unk>: zebra"]
    model, word_to_id, _ = loaded
    words = inference.generate(model, word_to_id, ["the", "zebra", "zebra"], num_words=25,
                               seed=1, stop_at_eos=False)
    assert first.stdout == inference.words_to_text(["the", "zebra", "zebra"] + words) + "\n"
    assert first.stdout != other.stdout


def test_driver_modes_name_the_kernel_flags_they_do_not_use_instead_of_refusing_them(
        trained, tmp_path, capsys):
    # generate runs without XLA, export serves its own kernel: block under --xla and cudnn on
    # a CPU were refused there, over settings those modes never use.
    code = driver_exit_in_process(*trained["flags"], "--mode=generate", "--rnn_mode=block",
                                  "--xla", "--num_words=3")
    assert code == 0
    assert "warning: --mode=generate ignores --xla (it runs the model its own way)" in \
        capsys.readouterr().err
    code = driver_exit_in_process(*trained["flags"], "--mode=export", "--rnn_mode=cudnn",
                                  f"--export_dir={tmp_path / 'lm'}")
    assert code == 0 and (tmp_path / "lm" / "saved_model.pb").is_file()
    assert "warning: --mode=export ignores --rnn_mode" in capsys.readouterr().err


def test_driver_prints_what_stdout_cannot_encode_escaped(trained, tmp_path):
    # An ASCII stdout and a prompt with a byte that is not UTF-8 (a surrogate to Python):
    # escaped in the output, not a UnicodeEncodeError traceback.
    path = tmp_path / "accents.txt"
    path.write_text("the caf\u00e9 sat\n")
    score = run_driver(*trained["flags"], "--mode=score", f"--input={path}",
                       env={"PYTHONIOENCODING": "ascii"})
    assert score.returncode == 0, score.stderr
    assert score.stdout.endswith("\tthe caf\\xe9 sat\n")
    generate = run_driver(*trained["flags"], "--mode=generate", "--prompt=the \udcff cat",
                          "--num_words=3", env={"PYTHONIOENCODING": "utf-8"})
    assert generate.returncode == 0, generate.stderr
    assert generate.stdout.startswith("the \\udcff cat")


def _score_stdin(trained, **kwargs):
    return subprocess.Popen(
        [sys.executable, str(REPO / "ptb_word_lm.py"), *trained["flags"], "--mode=score",
         "--input=-"], cwd=REPO, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        **kwargs)


def test_driver_score_file_and_stdin_as_tsv(trained, loaded, tmp_path):
    # A tab, a backslash, a double quote (a csv reader's quote) or a Unicode line break
    # inside a line must not add a column or a row.
    lines = [" the cat sat on the mat ", "a dog\tate a\\fish", '"the zebra saw a log',
             'a cat\u2028sat\x85on "the" mat\x0c', "the mat\""]
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(lines) + "\n")
    from_file = run_driver(*trained["flags"], "--mode=score", f"--input={path}")
    assert from_file.returncode == 0, from_file.stderr
    for stdin in ("-", "/dev/stdin"):  # a pipe named as a file is read as one
        from_stdin = subprocess.run(
            [sys.executable, str(REPO / "ptb_word_lm.py"), *trained["flags"], "--mode=score",
             f"--input={stdin}"], input=path.read_text(), cwd=REPO, capture_output=True,
            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
        assert from_stdin.returncode == 0, from_stdin.stderr
        assert from_stdin.stdout == from_file.stdout
    rows = [row.split("\t") for row in from_file.stdout.splitlines()]
    assert list(csv.reader(io.StringIO(from_file.stdout), delimiter="\t")) == rows
    model, word_to_id, _ = loaded
    expected = list(inference.score_lines(model, word_to_id, lines))
    assert len(rows) == len(lines)
    for row, line, score in zip(rows, lines, expected):
        log_prob, num_words, perplexity, text = row
        assert text.isascii() and text.encode().decode("unicode_escape") == line
        assert float(log_prob) == pytest.approx(score.log_prob, abs=1e-3)
        assert int(num_words) == len(line.split()) + 1
        assert float(perplexity) == pytest.approx(np.exp(-float(log_prob) / int(num_words)),
                                                  rel=1e-3)


def test_driver_score_reads_a_bom_crlf_and_lone_cr_as_eval_does(trained, loaded, tmp_path):
    # A BOM is dropped (with a warning), CRLF ends a line, a lone CR is a space in it.
    path = tmp_path / "windows.txt"
    path.write_bytes(b"\xef\xbb\xbfthe cat sat\r\nthe cat\rsat on the mat\r\n")
    result = run_driver(*trained["flags"], "--mode=score", f"--input={path}")
    assert result.returncode == 0, result.stderr
    assert "byte order mark (BOM), ignored" in result.stderr
    rows = [row.split("\t") for row in result.stdout.splitlines()]
    model, word_to_id, _ = loaded
    expected = list(inference.score_lines(model, word_to_id, ["the cat sat",
                                                               "the cat sat on the mat"]))
    assert [text for *_, text in rows] == ["the cat sat", "the cat\\rsat on the mat"]
    for row, score in zip(rows, expected, strict=True):
        assert float(row[0]) == pytest.approx(score.log_prob, abs=1e-3)


def test_driver_results_onto_a_full_disk_are_one_error_line(trained, tmp_path):
    path = tmp_path / "many.txt"
    path.write_text(" the cat sat on the mat \n" * 2000)
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, str(REPO / "ptb_word_lm.py"), *trained["flags"], "--mode=score",
             f"--input={path}"], cwd=REPO, stdout=full, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert_user_error(result, r"cannot write the results to stdout: No space left on device")


def test_driver_exports_after_training_and_from_a_checkpoint(trained, loaded, tmp_path):
    model, word_to_id, _ = loaded
    again = tmp_path / "again"
    result = run_driver(*trained["flags"], "--mode=export", f"--export_dir={again}",
                        f"--checkpoint={trained['save'] / 'best'}")
    assert result.returncode == 0, result.stderr
    ids = reader.words_to_ids(f"{reader.EOS} the cat sat on the mat {reader.EOS}".split(),
                              word_to_id)
    expected = training.stream_log_probs(model, ids).sum()
    for export_dir in (trained["export_dir"], again):
        lm = tf.saved_model.load(str(export_dir))
        got = lm.signatures["sequence_log_prob"](ids=tf.constant([ids]))["log_prob"].numpy()
        assert got[0] == pytest.approx(expected, abs=1e-4)
        words = [w.decode() for w in lm.signatures["vocab"]()["words"].numpy()]
        assert words == sorted(word_to_id, key=word_to_id.get)


def test_driver_progress_tty_redraws_one_line(tmp_path, make_corpus):
    corpus = make_corpus(grammar_text(200), grammar_text(30, seed=1), grammar_text(30, seed=2))
    # Bytes: text=True would turn each carriage return into a newline.
    result = subprocess.run(
        [sys.executable, str(REPO / "ptb_word_lm.py"), *SMALL_RUN, f"--data_path={corpus}",
         f"--save_path={tmp_path / 'run'}", "--progress=tty"], cwd=REPO, capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert not re.search(r"^0\.\d{3} perplexity: ", out, re.M)  # no tutorial lines
    progress = re.findall(r"\rEpoch: 1 +[\d.]+% perplexity: [\d.]+ speed: \d+ wps ETA: \d+:\d\d",
                          out)
    assert len(progress) >= 3
    assert re.search(r"100\.0% perplexity: [\d.]+ speed: \d+ wps ETA: 0:00\x1b\[K\n"
                     r"Epoch: 1 Train Perplexity: ", out)


def test_driver_score_answers_a_pipe_line_by_line(trained):
    # A co-process writes a line and waits for its row: it waited for 64 lines or the end.
    proc = _score_stdin(trained, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
    try:
        for line in ("the cat sat", "the dog sat on the log"):
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 120)  # the model loads first
            assert ready, f"no row for {line!r}"
            assert proc.stdout.readline().rstrip("\n").split("\t")[-1] == line
    finally:
        proc.kill()
        proc.communicate()


def test_driver_score_stdin_closed_is_one_error_line(trained):
    proc = _score_stdin(trained, stdin=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        preexec_fn=lambda: os.close(0))
    out, err = proc.communicate(timeout=300)
    assert_user_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err),
                      r"--input=- reads stdin, but stdin is closed")


def test_driver_score_into_a_closed_pipe_exits_quietly(trained, tmp_path):
    path = tmp_path / "many.txt"
    path.write_text(" the cat sat on the mat \n" * 20000)  # more rows than a pipe buffer holds
    with open(path) as stdin:
        proc = _score_stdin(trained, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # as `| head -1` reads
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=300)
    assert first.count("\t") == 3
    assert proc.returncode == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "BrokenPipeError" not in err
    assert not [line for line in err.splitlines() if line.startswith("error:")]


def test_driver_ctrl_c_while_score_waits_on_stdin_is_one_line_and_exit_130(trained):
    proc = _score_stdin(trained, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    for line in proc.stderr:  # wait until the model is loaded and score reads stdin
        if line.startswith("Loading"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.strip().splitlines()[-1] == "interrupted"


def test_driver_ctrl_c_during_a_long_generate_keeps_the_words_sampled(trained, loaded):
    # The text was printed at the end only: an interrupted generate lost all of it.
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "ptb_word_lm.py"), *trained["flags"], "--mode=generate",
         "--prompt=the", "--num_words=1000000", "--stop_at_eos=false"], cwd=REPO, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    try:
        early, deadline = b"", time.time() + 120  # the model loads first
        while len(early.split()) < 12:
            assert time.time() < deadline and proc.poll() is None, early
            if select.select([proc.stdout], [], [], 1)[0]:
                early += os.read(proc.stdout.fileno(), 1 << 16)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted"
    _, word_to_id, _ = loaded
    words = (early.decode() + out).split()
    assert words[0] == "the" and len(words) >= 12 and set(words) <= set(word_to_id)


# In this process: main()'s checks, before anything is loaded (test_driver.py shows the
# line a process prints for such an error).
@pytest.mark.parametrize("flags, message", [
    (["--mode=generate", "--seed=-9223372036854775809"], r"outside the 64-bit range"),
    (["--mode=score"], r"--mode=score needs --input=FILE .* --input=- to read stdin"),
    (["--mode=score", "--input=/no/such/file.txt"], r"--input file not found: /no/such/file"),
    (["--mode=score", "--input=/"], r"--input / is a directory: pass a text file, or - for stdin"),
    (["--mode=eval", "--eval_data=/no/such.txt"], r"^error: --eval_data=/no/such.txt: file not "
                                                  r"found: /no/such.txt; pass valid, test or a "
                                                  r"text file$"),
    (["--mode=export"], r"--mode=export needs --export_dir"),
    (["--mode=eval"], r"save_path .*run does not exist; train first"),
    (["--checkpoint=runs/x/ckpt-9"], r"^error: --checkpoint applies to --mode=eval\|generate\|score\|"
                                     r"export only, not --mode=train; training resumes from the "
                                     r"newest snapshot in --save_path$"),
    (["--mode=score", "--input=-", "--prompt=the"], r"^error: --prompt applies to --mode=generate "
                                                    r"only, not --mode=score$"),
])
def test_driver_bad_mode_flags_fail_in_one_line(tmp_path, flags, message):
    save = tmp_path / "run"
    assert_exit_error(driver_exit_in_process(f"--save_path={save}", *flags), message)
    assert not save.exists()


def test_driver_names_the_training_flags_another_mode_does_not_read(tmp_path, capsys):
    # A training command reused with --mode=eval: the flags only training reads are named.
    # --model too, beside --save_path: it only names the default save_path, runs/<model>.
    code = driver_exit_in_process(f"--save_path={tmp_path / 'run'}", "--mode=eval",
                                  "--override=keep_prob=0.5", "--precision=bfloat16", "--seed=3",
                                  "--model=large")
    assert_exit_error(code, r"save_path .*run does not exist; train first")
    assert ("warning: --mode=eval ignores --override, --precision, --seed, --model (training's "
            "flags; this mode takes the checkpoint's config, vocabulary and weights)"
            ) in capsys.readouterr().err


def test_driver_refuses_an_empty_save_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it would have become runs/small here
    assert_exit_error(driver_exit_in_process("--save_path="), r"^error: --save_path is empty")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag, mode", [("--checkpoint=", "generate"), ("--export_dir=", "train"),
                                        ("--data_path=", "train"), ("--train_file=", "train"),
                                        ("--eval_data=", "eval")])
def test_driver_refuses_an_empty_path_flag(tmp_path, flag, mode):
    # They meant the newest checkpoint, no export, the cwd: silently, with exit 0.
    code = driver_exit_in_process(f"--save_path={tmp_path / 'run'}", f"--mode={mode}", flag)
    assert_exit_error(code, rf"^error: {flag[:-1]} is empty \(an unset shell variable\?\); give "
                            rf"it a value, or leave the flag out for its default$")
    assert not (tmp_path / "run").exists()


def test_driver_modes_without_a_checkpoint_say_train_first(tmp_path):
    (tmp_path / "run").mkdir()
    code = driver_exit_in_process(f"--save_path={tmp_path / 'run'}", "--mode=generate")
    assert_exit_error(code, r"no checkpoint in .*run; train first")


def test_driver_eval_checks_its_files_before_loading_and_names_the_users_own(trained, tmp_path,
                                                                            capsys):
    # A missing split fails before the model loads (minutes for large); a user's own empty
    # file is not fixed by downloading PTB.
    code = driver_exit_in_process(f"--save_path={trained['save']}", "--mode=eval",
                                  f"--data_path={tmp_path}")
    assert_exit_error(code, rf"^error: --eval_data=test: file not found: {tmp_path}/ptb\.test"
                            rf"\.txt; run scripts/get_ptb\.sh or pass the right --data_path$")
    assert "Loading" not in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("")
    code = driver_exit_in_process(f"--save_path={trained['save']}", "--mode=eval",
                                  f"--eval_data={tmp_path / 'empty.txt'}")
    assert_exit_error(code, r"^error: --eval_data file is empty: .*empty\.txt; pass a text file "
                            r"with words in it$")


def test_driver_score_names_the_line_of_a_byte_that_is_not_utf8(trained, tmp_path, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes("the cat sat\nthe caf\u00e9 sat\nthe caf\u00e9 sat\n".encode("utf-8")[:-10]
                     + "caf\u00e9 sat\n".encode("latin-1"))
    code = driver_exit_in_process(*trained["flags"], "--mode=score", f"--input={path}")
    assert_exit_error(code, rf"^error: {path} line 3 is not UTF-8 \(byte 0xe9 at byte 8 of the "
                            rf"line\); re-encode it as UTF-8$")
    # The lines before it, in the same batch, are scored first: they were lost.
    assert [row.split("\t")[-1] for row in capsys.readouterr().out.splitlines()] == [
        "the cat sat", "the caf\u00e9 sat"]
