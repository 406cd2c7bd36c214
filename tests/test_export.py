"""Tests of export: the SavedModel serves the model's numbers to a process that has only TF."""

import errno
import fcntl
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import errors
import files
import export
import model as model_lib
import reader
import training
from helpers import REPO, TINY_TEXT, tree_digest

# Run by a bare interpreter (-I: no cwd, no PYTHONPATH on sys.path), so only TF is at hand.
CONSUMER = r"""
import json, os, sys
import tensorflow as tf
repo = os.path.realpath(sys.argv[3])
assert repo not in [os.path.realpath(p) for p in sys.path if p], sys.path
try:
    import model  # the repository's module must not be importable
    raise SystemExit("the repository's model.py is importable")
except ImportError:
    pass
lm = tf.saved_model.load(sys.argv[1])
ids = tf.constant(json.loads(sys.argv[2]), tf.int32)
words = [w.decode() for w in lm.signatures["vocab"]()["words"].numpy()]
with open(lm.vocab_file.asset_path.numpy().decode(), encoding="utf-8") as f:
    asset_words = f.read().split()
word_ids = lm.signatures["word_ids"](words=tf.constant([[words[i] for i in row]
                                                         for row in ids.numpy()]))
names = sorted(lm.signatures["next_word"].structured_input_signature[1])
state = {n: tf.zeros([ids.shape[0], int(lm.hidden_size)]) for n in names if n != "ids"}
half = ids.shape[1] // 2
first = lm.signatures["next_word"](ids=ids[:, :half], **state)
second = lm.signatures["next_word"](ids=ids[:, half:], **{n: first[n] for n in state})
whole = lm.signatures["next_word"](ids=ids, **state)
print(json.dumps({
    "words": words, "asset_words": asset_words, "word_ids": word_ids["ids"].numpy().tolist(),
    "state_names": sorted(state), "vocab_size": int(lm.vocab_size),
    "config": json.loads(lm.config_json.numpy().decode()),
    "log_probs_first": first["log_probs"].numpy().tolist(),
    "log_probs_carried": second["log_probs"].numpy().tolist(),
    "log_probs_whole": whole["log_probs"].numpy().tolist(),
    "sequence_log_prob": lm.signatures["sequence_log_prob"](ids=ids)["log_prob"].numpy().tolist(),
    "sequence_log_prob_of_one_word": lm.signatures["sequence_log_prob"](
        ids=ids[:, :1])["log_prob"].numpy().tolist(),
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 2-layer model in rnn_mode basic (the export swaps in BlockLSTM), exported once."""
    word_to_id = reader.build_vocab(TINY_TEXT.replace("\n", f" {reader.EOS} ").split())
    model = model_lib.PTBModel(len(word_to_id), 8, 2, init_scale=0.5, rnn_mode="basic", seed=3)
    export_dir = tmp_path_factory.mktemp("export") / "lm"
    export.export_saved_model(model, word_to_id, str(export_dir))
    return model, word_to_id, export_dir


def _consume(export_dir, ids, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    result = subprocess.run([sys.executable, "-I", "-c", CONSUMER, str(export_dir),
                             json.dumps(ids), str(REPO)],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_export_serves_the_models_numbers_to_a_clean_process(exported, tmp_path):
    model, word_to_id, export_dir = exported
    ids = [[word_to_id[w] for w in f"{reader.EOS} the cat sat on the mat".split()],
           [word_to_id[w] for w in f"{reader.EOS} a dog saw a <unk> dog".split()]]
    got = _consume(export_dir, ids, cwd=tmp_path)

    words = sorted(word_to_id, key=word_to_id.get)
    assert got["words"] == words and got["asset_words"] == words
    assert got["word_ids"] == ids and got["vocab_size"] == len(words)
    assert got["state_names"] == ["c0", "c1", "h0", "h1"]

    ids = np.array(ids, np.int32)
    logits, _ = model(tf.constant(ids), model.zero_state(2))
    expected = tf.nn.log_softmax(logits[:, -1]).numpy()
    np.testing.assert_allclose(got["log_probs_whole"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["log_probs_carried"], expected, rtol=1e-5, atol=1e-5)
    first, _ = model(tf.constant(ids[:, :3]), model.zero_state(2))
    np.testing.assert_allclose(got["log_probs_first"], tf.nn.log_softmax(first[:, -1]).numpy(),
                               rtol=1e-5, atol=1e-5)
    expected_sums = [training.stream_log_probs(model, row).sum() for row in ids]
    np.testing.assert_allclose(got["sequence_log_prob"], expected_sums, rtol=1e-5, atol=1e-4)


def test_export_word_ids_reads_unknown_words_as_unk(exported):
    _, word_to_id, export_dir = exported
    lm = tf.saved_model.load(str(export_dir))
    ids = lm.signatures["word_ids"](words=tf.constant([["the", "zebra"]]))["ids"].numpy()
    assert ids.tolist() == [[word_to_id["the"], word_to_id[reader.UNK]]]


def test_export_replaces_an_earlier_export_but_no_other_directory(exported, tmp_path):
    model, word_to_id, export_dir = exported
    target = tmp_path / "lm"
    export.export_saved_model(model, word_to_id, str(target))
    export.export_saved_model(model, word_to_id, str(target))  # an earlier export: replaced
    assert (target / "saved_model.pb").is_file()
    assert (target / "assets" / "vocab.txt").read_text().split()[0] == "the"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".export.")]  # no leftovers
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(export.ExportError, match=r"holds files that are not a SavedModel of "
                                                 r"ptb_word_lm.py \(todo.txt\)"):
        export.export_saved_model(model, word_to_id, str(other))
    assert (other / "todo.txt").read_text() == "keep me"


def test_export_error_is_a_user_error():
    assert issubclass(export.ExportError, errors.UserError)
    assert issubclass(export.ExportError, ValueError)


def test_export_over_a_savedmodel_with_other_files_refuses_and_deletes_nothing(exported,
                                                                              tmp_path):
    # Fault 2: a user's README.txt beside an earlier export was lost.
    model, word_to_id, _ = exported
    target = tmp_path / "lm"
    export.export_saved_model(model, word_to_id, str(target))
    (target / "README.txt").write_text("keep me")
    (target / "assets" / "notes.txt").write_text("me too")
    before = tree_digest(target)
    with pytest.raises(export.ExportError, match=r"not a SavedModel of ptb_word_lm.py "
                                                 r"\(README.txt, assets/notes.txt\)"):
        export.export_saved_model(model, word_to_id, str(target))
    assert tree_digest(target) == before


def test_a_file_put_into_an_earlier_export_while_exporting_is_kept(exported, tmp_path,
                                                                   monkeypatch):
    # It was checked before the save, then deleted with the earlier export swapped out.
    model, word_to_id, _ = exported
    target = tmp_path / "lm"
    export.export_saved_model(model, word_to_id, str(target))
    swap = files.swap_directories

    def a_file_arrives_then_swap(new, old):
        if not (target / "README.txt").exists():
            (target / "README.txt").write_text("keep me")
        swap(new, old)

    monkeypatch.setattr(files, "swap_directories", a_file_arrives_then_swap)
    with pytest.raises(export.ExportError, match=r"gained files while exporting \(README.txt\); "
                                                 r"nothing was replaced"):
        export.export_saved_model(model, word_to_id, str(target))
    assert (target / "README.txt").read_text() == "keep me"
    assert (target / "saved_model.pb").is_file()
    assert sorted(os.listdir(tmp_path)) == ["lm"]  # no staging directory left


def test_export_refuses_another_programs_savedmodel(exported, tmp_path):
    model, word_to_id, _ = exported
    theirs = tmp_path / "theirs"
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(theirs))
    before = tree_digest(theirs)
    with pytest.raises(export.ExportError, match=r"not a SavedModel of ptb_word_lm.py"):
        export.export_saved_model(model, word_to_id, str(theirs))
    assert tree_digest(theirs) == before


@pytest.mark.parametrize("full_disk", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    tf.errors.ResourceExhaustedError(None, None, "variables.data: No space left on device"),
])
def test_export_on_a_full_disk_fails_in_one_line_keeping_the_earlier_export(
        exported, tmp_path, monkeypatch, full_disk):
    # Fault 5: a full disk gave a traceback.
    model, word_to_id, _ = exported
    target = tmp_path / "lm"
    export.export_saved_model(model, word_to_id, str(target))
    before = tree_digest(target)
    save = tf.saved_model.save

    def save_then_fill_the_disk(obj, export_dir, signatures=None):
        save(obj, export_dir, signatures=signatures)  # partial files on disk, then the error
        raise full_disk

    monkeypatch.setattr(tf.saved_model, "save", save_then_fill_the_disk)
    with pytest.raises(export.ExportError, match=r"^cannot write export_dir .*No space left on "
                                                 r"device; .*earlier export there is kept\)$"):
        export.export_saved_model(model, word_to_id, str(target))
    assert tree_digest(target) == before
    assert sorted(os.listdir(tmp_path)) == ["lm"]  # no staging directory left


def test_an_export_dir_under_a_file_is_refused_before_anything(tmp_path, monkeypatch):
    # Checked up front by the driver (before a training): it failed after, as a full disk.
    (tmp_path / "s.txt").write_text("")
    with pytest.raises(export.ExportError, match=r"cannot be made: .*s.txt is not a writable "
                                                 r"directory; choose another path$"):
        export.check_export_dir(str(tmp_path / "s.txt" / "sub" / "lm"))
    assert export.check_export_dir(str(tmp_path / "new" / "lm")) == str(tmp_path / "new" / "lm")
    with pytest.raises(export.ExportError, match=r"^export_dir / is a mount point; choose a "
                                                 r"directory inside it$"):
        export.check_export_dir("/")  # the swap's rename would fail with EBUSY after the save
    # A bind mount within one filesystem, which os.path.ismount misses (as mountinfo lists it).
    bound = tmp_path / "a dir"
    bound.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"45 27 254:0 /src {str(bound).replace(' ', chr(92) + '040')} rw - ext4 "
                         f"/dev/vda rw\n")
    monkeypatch.setattr(export, "_MOUNTINFO", str(mountinfo))
    with pytest.raises(export.ExportError, match=r"a dir is a mount point"):
        export.check_export_dir(str(bound))


def test_an_export_that_fails_but_not_for_space_does_not_say_free_space(exported, tmp_path,
                                                                         monkeypatch):
    model, word_to_id, _ = exported

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    monkeypatch.setattr(tf.saved_model, "save", denied)
    with pytest.raises(export.ExportError, match=r": Permission denied; choose another "
                                                 r"directory \(an earlier export"):
        export.export_saved_model(model, word_to_id, str(tmp_path / "lm"))


def test_export_through_a_symlink_replaces_its_target_and_keeps_the_link(exported, tmp_path):
    model, word_to_id, _ = exported
    target = tmp_path / "v1"
    export.export_saved_model(model, word_to_id, str(target))
    (tmp_path / "current").symlink_to("v1")
    assert export.export_saved_model(model, word_to_id, str(tmp_path / "current")) == str(target)
    assert os.path.islink(tmp_path / "current") and sorted(os.listdir(tmp_path)) == [
        "current", "v1"]
    assert tf.saved_model.load(str(tmp_path / "current")).signatures["vocab"]


def test_export_removes_staging_dirs_of_killed_exports_but_not_of_running_ones(exported,
                                                                              tmp_path):
    # Fault 14: SIGKILL during export left a hidden .export.* directory for good.
    model, word_to_id, _ = exported
    killed = tmp_path / ".export.k1ll3d_x"
    (killed / "saved_model" / "variables").mkdir(parents=True)
    (killed / "saved_model" / "saved_model.pb").write_bytes(b"partial")
    (killed / files._STAGING_MARKER).write_text("")  # as staging_directory made it
    running = tmp_path / ".export.runn1ng_"
    running.mkdir()
    fd = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running export holds its own
        export.export_saved_model(model, word_to_id, str(tmp_path / "lm"))
    finally:
        os.close(fd)
    assert not killed.exists() and running.is_dir()
    assert sorted(os.listdir(tmp_path)) == [".export.runn1ng_", "lm"]


# The GRU's h-only state stands for the plain RNN's too (the same serving code).
@pytest.mark.parametrize("rnn_mode, cell", [("fused", "lstm"), ("basic", "gru")])
def test_export_of_a_tied_model_serves_its_numbers(rnn_mode, cell, tmp_path):
    # The serving copy keeps the tying (no softmax_w) and the cell; a GRU or RNN serves in basic.
    word_to_id = reader.build_vocab(TINY_TEXT.replace("\n", f" {reader.EOS} ").split())
    model = model_lib.PTBModel(len(word_to_id), 8, 2, init_scale=0.5, rnn_mode=rnn_mode, seed=3,
                               cell=cell, tie_embeddings=True, variational_dropout=True,
                               keep_prob=0.5, recurrent_keep_prob=0.5, weight_drop=0.5)
    copy = export._serving_copy(model)
    assert copy.rnn_mode == ("block" if cell == "lstm" else "basic")
    assert copy.softmax_w is None and copy.cell == cell
    export_dir = export.export_saved_model(model, word_to_id, str(tmp_path / "lm"))
    ids = [[word_to_id[w] for w in f"{reader.EOS} the cat sat on the mat".split()]]
    got = _consume(export_dir, ids, cwd=tmp_path)
    assert got["state_names"] == (["c0", "c1", "h0", "h1"] if cell == "lstm" else ["h0", "h1"])
    logits, _ = model(tf.constant(ids), model.zero_state(1))
    expected = tf.nn.log_softmax(logits[:, -1]).numpy()
    np.testing.assert_allclose(got["log_probs_whole"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["log_probs_carried"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["sequence_log_prob"],
                               [training.stream_log_probs(model, np.array(ids[0])).sum()],
                               rtol=1e-5, atol=1e-4)
    assert got["sequence_log_prob_of_one_word"] == [0.0]  # nothing predicted (time 1 is allowed)
