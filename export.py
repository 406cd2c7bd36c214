"""Writes a trained model as a SavedModel with serving signatures and its vocabulary as an asset.

A consumer needs only TensorFlow, not this repository:

    lm = tf.saved_model.load("export/small")
    words = lm.signatures["vocab"]()["words"]                  # string [vocab_size], id order
    ids = lm.signatures["word_ids"](words=tf.constant([["<eos>", "the"]]))["ids"]
    zero = tf.zeros([1, int(lm.hidden_size)])
    out = lm.signatures["next_word"](ids=ids, c0=zero, h0=zero, c1=zero, h1=zero)
    out["log_probs"]  # [1, vocab_size]; out["c0"], out["h0"], ... carry the state on
    # (a GRU or RNN model has no c: its state is h0, h1, ...)
    lm.signatures["sequence_log_prob"](ids=ids)["log_prob"]    # [1]

The vocabulary file is assets/vocab.txt (also `lm.vocab_file.asset_path`).
"""

import errno
import json
import os
import re

import tensorflow as tf
from google.protobuf import message
from tensorflow.core.protobuf import saved_model_pb2

import checkpoints
import configs
import errors
import files
import model as model_lib
import reader

SIGNATURES = ("next_word", "sequence_log_prob", "vocab", "word_ids")
# What tf.saved_model.save writes for our module: anything else in export_dir is someone's.
_WRITTEN = {"saved_model.pb": None, "fingerprint.pb": None,
            "variables": re.compile(r"variables\.(index|data-\d+-of-\d+)"),
            "assets": re.compile(re.escape(checkpoints.VOCAB_FILE))}
_STAGING_PREFIX = ".export."  # staging directories beside export_dir (files.staging_directory)


class ExportError(errors.UserError, ValueError):
    """The export directory cannot be written; the message says why."""


def state_names(num_layers, cell="lstm"):
    """Names of the flat state tensors, layer by layer: c0, h0, c1, h1, ... (h0, h1, ... for a
    GRU or RNN cell, whose state is h alone)."""
    parts = ("c", "h") if cell == "lstm" else ("h",)
    return [f"{part}{layer}" for layer in range(num_layers) for part in parts]


def _foreign_files(export_dir):
    """Names in export_dir that an export of ours did not write (all of them if it is not one)."""
    names = sorted(os.listdir(export_dir))
    foreign = [n for n in names if n not in _WRITTEN]
    for name, pattern in _WRITTEN.items():
        path = os.path.join(export_dir, name)
        if pattern and os.path.lexists(path):
            if not os.path.isdir(path) or os.path.islink(path):
                foreign.append(name)
            else:
                foreign += [f"{name}/{n}" for n in sorted(os.listdir(path))
                            if not pattern.fullmatch(n)]
    if foreign:
        return foreign
    try:
        with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
            saved = saved_model_pb2.SavedModel.FromString(f.read())
        ours = set(SIGNATURES) <= set(saved.meta_graphs[0].signature_def)
    except (OSError, message.DecodeError, IndexError):
        ours = False
    return [] if ours else names


def check_export_dir(export_dir):
    """Returns export_dir as an absolute path, symlinks resolved; ExportError if an export
    must not go there.

    An export goes only into an absent or empty directory or over an earlier
    export of ours (a SavedModel with our signatures and nothing else): it
    never deletes what it did not write.
    """
    # A symlink (current -> v3) stays: the export replaces the directory it points to.
    export_dir = os.path.realpath(export_dir)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ExportError(f"export_dir {export_dir} is a file; choose a new or empty directory")
    if _is_mount_point(export_dir):  # the export is swapped in by a rename, which cannot move it
        raise ExportError(f"export_dir {export_dir} is a mount point; choose a directory inside "
                          f"it")
    parent = os.path.dirname(export_dir)  # the nearest existing one must take a new directory
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"export_dir {export_dir} cannot be made: {parent} is not a writable "
                          f"directory; choose another path")
    if os.path.isdir(export_dir) and os.listdir(export_dir):
        foreign = _foreign_files(export_dir)
        if foreign:
            raise ExportError(f"export_dir {export_dir} holds files that are not a SavedModel of "
                              f"ptb_word_lm.py ({_shown(foreign)}); nothing was replaced: choose "
                              f"a new or empty directory")
    return export_dir


_MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")  # how mountinfo writes a space (\040) in a path


def _is_mount_point(path):
    """os.path.ismount, and a bind mount within one filesystem, which it misses (Linux)."""
    if os.path.ismount(path):
        return True
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as f:
            fields = [line.split() for line in f]
    except OSError:  # no /proc (macOS)
        return False
    return any(len(field) > 4 and _OCTAL.sub(lambda m: chr(int(m[1], 8)), field[4]) == path
               for field in fields)


def _shown(names):
    return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")


def _serving_copy(model):
    """The model in a kernel that runs on CPU and GPU alike: BlockLSTM for an LSTM, basic
    (the only kernel they have) for a GRU or RNN.

    A cuDNN export would need a GPU to serve; the weights are the same in every mode. The
    copy has the model's cell and tying; the training-only options (dropouts) it needs not.
    """
    rnn_mode = "block" if model.cell == "lstm" else "basic"
    if model.rnn_mode == rnn_mode:
        return model
    copy = model_lib.PTBModel(model.vocab_size, model.hidden_size, model.num_layers,
                              init_scale=0.0, keep_prob=model.keep_prob, rnn_mode=rnn_mode,
                              cell=model.cell, tie_embeddings=model.tie_embeddings)
    for target, source in zip(copy.trainable_variables, model.trainable_variables, strict=True):
        target.assign(source)
    return copy


class _ServingModule(tf.Module):
    """The model, its vocabulary asset and the serving functions, as one saveable module."""

    def __init__(self, model, vocab_path, unk_id, config_json):
        super().__init__(name="ptb_word_lm")
        self.model = model
        self.vocab_file = tf.saved_model.Asset(vocab_path)
        # Variables, not constants: a SavedModel keeps only trackable attributes.
        self.vocab_size = tf.Variable(model.vocab_size, trainable=False, name="vocab_size")
        self.hidden_size = tf.Variable(model.hidden_size, trainable=False, name="hidden_size")
        self.num_layers = tf.Variable(model.num_layers, trainable=False, name="num_layers")
        self.config_json = tf.Variable(config_json, trainable=False, name="config_json")
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                self.vocab_file, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=unk_id)
        self.next_word = self._make_next_word()
        self.sequence_log_prob = tf.function(
            self._sequence_log_prob,
            input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids")])
        self.vocab = tf.function(self._vocab, input_signature=[])
        self.word_ids = tf.function(
            self._word_ids, input_signature=[tf.TensorSpec([None, None], tf.string, name="words")])

    def _make_next_word(self):
        model = self.model
        names = state_names(model.num_layers, model.cell)
        specs = [tf.TensorSpec([None, None], tf.int32, name="ids")] + [
            tf.TensorSpec([None, model.hidden_size], tf.float32, name=n) for n in names]
        # The state's structure (a LSTMStateTuple(c, h) or an h per layer), in names' order.
        structure = tf.nest.map_structure(lambda _: None, model.zero_state(1))

        @tf.function(input_signature=specs)
        def next_word(ids, *flat_state):
            state = tf.nest.pack_sequence_as(structure, list(flat_state))
            outputs, final = model.hidden(ids, state, training=False)
            result = {"log_probs": tf.nn.log_softmax(model.project(outputs[:, -1]))}
            result.update(zip(names, tf.nest.flatten(final)))
            return result
        return next_word

    def _sequence_log_prob(self, ids):
        model = self.model
        outputs, _ = model.hidden(ids[:, :-1], model.zero_state(tf.shape(ids)[0]), training=False)
        log_probs = -tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=ids[:, 1:], logits=model.project(outputs))  # [batch, time - 1]
        return {"log_prob": tf.reduce_sum(log_probs, axis=1)}

    def _vocab(self):
        return {"words": tf.strings.split(tf.io.read_file(self.vocab_file))}

    def _word_ids(self, words):
        return {"ids": tf.cast(self.table.lookup(words), tf.int32)}


def export_saved_model(model, word_to_id, export_dir, config=None):
    """Writes `model` as a SavedModel in export_dir, replacing an earlier export there.

    Signatures:
      next_word: ids int32 [batch, time >= 1] and the state c0, h0, c1, h1, ...
        (h0, h1, ... for a GRU or RNN model)
        float32 [batch, hidden_size] each (zeros: the start of a text) ->
        log_probs float32 [batch, vocab_size], the next word's log-probabilities
        after the last position, and the new state under the same names.
      sequence_log_prob: ids int32 [batch, time >= 1] -> log_prob float32
        [batch], log p(ids[:, 1:] | ids[:, :1]) from the zero state. As
        ptb_word_lm.py --mode=score does, start a sentence with <eos>.
      vocab: () -> words string [vocab_size], the words in id order.
      word_ids: words string [batch, time] -> ids int32, unknown words as <unk>
        (-1 if the vocabulary has no <unk>).
    Attributes: vocab_file (Asset, assets/vocab.txt), vocab_size, hidden_size,
    num_layers, config_json (scalar variables).

    Args:
      model: a PTBModel.
      word_to_id: its vocabulary.
      export_dir: directory to write; it must be absent, empty or an earlier export.
      config: optional configs.Config, stored as config_json.
    Returns:
      export_dir as an absolute path.
    Raises:
      ExportError: export_dir holds something other than a SavedModel, or
        cannot be written.
    """
    export_dir = check_export_dir(export_dir)
    config_json = json.dumps(configs.to_dict(config) if config is not None else {})
    try:
        _save(model, word_to_id, export_dir, config_json)
    except (OSError, tf.errors.OpError) as e:  # a full disk comes as either
        reason = e.strerror if isinstance(e, OSError) and e.strerror else errors.first_line(e)
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        fix = ("free some space or choose another directory" if full or not isinstance(e, OSError)
               else "choose another directory")
        raise ExportError(f"cannot write export_dir {export_dir}: {reason}; {fix} (an earlier "
                          f"export there is kept)") from None
    return export_dir


def _swap_back_if_foreign(earlier, export_dir):
    """Puts the earlier export back and raises ExportError if files came into it since
    check_export_dir, which would be deleted with it."""
    foreign = _foreign_files(earlier)
    if foreign:
        files.swap_directories(earlier, export_dir)
        raise ExportError(f"export_dir {export_dir} gained files while exporting "
                          f"({_shown(foreign)}); nothing was replaced: choose a new or empty "
                          f"directory")


def _save(model, word_to_id, export_dir, config_json):
    """Saves into a staging directory beside export_dir, then swaps it into place.

    The staging directory (files.staging_directory) is removed afterwards
    whatever happens, with the earlier export it swapped out.
    """
    with files.staging_directory(os.path.dirname(export_dir), _STAGING_PREFIX) as tmp:
        vocab_path = os.path.join(tmp, "vocab", checkpoints.VOCAB_FILE)
        os.makedirs(os.path.dirname(vocab_path))
        reader.save_vocab(word_to_id, vocab_path)
        serving = _ServingModule(_serving_copy(model), vocab_path,
                                 word_to_id.get(reader.UNK, -1), config_json)
        staged = os.path.join(tmp, "saved_model")
        signatures = {name: getattr(serving, name).get_concrete_function() for name in SIGNATURES}
        tf.saved_model.save(serving, staged, signatures=signatures)
        if os.path.isdir(export_dir):
            files.swap_directories(staged, export_dir)  # the earlier export is now at staged
            _swap_back_if_foreign(staged, export_dir)
        else:
            os.rename(staged, export_dir)
