"""Trains and evaluates the PTB word-level LSTM language model; the only reader of FLAGS.

    python ptb_word_lm.py --model=small
    python ptb_word_lm.py --model=medium --save_path=runs/medium   # rerun to resume
    python ptb_word_lm.py --mode=eval --save_path=runs/small --eval_data=test
    python ptb_word_lm.py --mode=generate --save_path=runs/small --prompt="the company said"
    python ptb_word_lm.py --mode=score --save_path=runs/small --input=sentences.txt
    python ptb_word_lm.py --mode=export --save_path=runs/small --export_dir=export/small
"""

import collections
import errno
import itertools
import os
import signal
import sys


def _interrupted(signum, frame):
    """Ctrl-C outside a training (start-up, eval, generate, score): one line, exit 130."""
    print("\ninterrupted", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    # Before the heavy imports, so even Ctrl-C during TensorFlow's start-up is one line.
    signal.signal(signal.SIGINT, _interrupted)

# Keep TensorFlow's C++ info logs out of the tutorial's output lines. (TensorFlow 2.21
# still prints a few start-up lines on stderr before absl's logging is set up; no
# setting of this variable silences those.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Pool host memory in TensorFlow's BFC allocator: otherwise the compiled step's
# temporaries (~100 MB) come fresh from mmap on every call, ~11k page faults
# per small-config step (measured 20-30% of the step). TF_CPU_ALLOCATOR_USE_BFC=false
# turns it off.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import tensorflow as tf  # noqa: E402

import checkpoints  # noqa: E402
import configs  # noqa: E402
import distribute  # noqa: E402
import export  # noqa: E402
import files  # noqa: E402
import inference  # noqa: E402
import precision  # noqa: E402
import reader  # noqa: E402
import run  # noqa: E402
from errors import UserError  # noqa: E402
from rnn import kernels  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "small", list(configs.CONFIGS), "Model config: the tutorial's small, "
                  "medium, large, test; later papers' small_tied, medium_tied_vd, awd; hour, for "
                  "--max_minutes=60 (configs.py).")
flags.DEFINE_string("data_path", reader.DEFAULT_DATA_PATH,
                    "Directory with the train/valid/test text files (scripts/get_ptb.sh puts PTB here).")
flags.DEFINE_string("save_path", None,
                    "Directory for checkpoints, vocabulary and metrics.json; rerunning with the same "
                    "directory resumes. Default: runs/<model>.")
flags.DEFINE_enum("rnn_mode", kernels.AUTO, [kernels.AUTO, *kernels.NAMES],
                  "LSTM implementation: basic (our dynamic_rnn over LSTMCell), fused (our whole-"
                  "sequence LSTM with a hand-written backward pass), block (TensorFlow's BlockLSTM "
                  "kernel), cudnn (GPU only); auto: cudnn on a GPU, else fused under XLA.")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights and the dropout masks; in "
                     "--mode=generate, of the sampling (same seed, same text).")
flags.DEFINE_multi_string("override", [], "Config override key=value, one per flag, repeated: "
                          "e.g. --override=num_steps=35 --override=cell=gru (configs.py lists "
                          "the keys).")
flags.DEFINE_float("checkpoint_every_minutes", 10.0, "Also save a checkpoint this often mid-epoch "
                   "(0: only at epoch ends and on SIGINT/SIGTERM).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also save a checkpoint every N training steps "
                     "(0: off).")
flags.DEFINE_float("max_minutes", None, "Stop training after this many minutes of epochs (with a "
                   "checkpoint), then validate and test as at the end of a run, so runs of equal "
                   "cost compare; a rerun with a larger budget goes on. Default: no limit.")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep "
                     "(the best by validation perplexity is kept apart).")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism (bitwise-repeatable "
                  "runs and resumes; may be slower).")
flags.DEFINE_bool("xla", None, "Compile the training and evaluation steps with XLA (default: "
                  "on for --rnn_mode=basic and fused; auto picks fused on a CPU).")
flags.DEFINE_enum("precision", precision.FLOAT32, list(precision.PRECISIONS),
                  "Training precision: float32 throughout, or bfloat16 for the training step's "
                  "large matrix products (on oneDNN, outside XLA; weights, state, loss and update "
                  "stay float32, evaluation is float32). Needs --rnn_mode=fused (auto on a CPU) "
                  "under XLA, one device.")
flags.DEFINE_enum("progress", "auto", ["auto", *run.PROGRESS],
                  "Training progress: plain prints the tutorial's lines each tenth of an epoch; "
                  "tty redraws one line (fraction, perplexity, speed, ETA); auto: tty on a "
                  "terminal.")
# Data-parallel training (distribute.py): the global batch stays batch_size, split by rows.
flags.DEFINE_enum("strategy", "auto", list(run.STRATEGIES),
                  "none: one device; mirrored: the local GPUs (or --num_cpu_replicas logical CPUs); "
                  "multi_worker: one process per worker, cluster from TF_CONFIG; auto: "
                  "multi_worker when TF_CONFIG is set, else none.")
flags.DEFINE_integer("num_cpu_replicas", 0, "--strategy=mirrored over N logical CPU devices "
                     "(for testing; they share the CPU's cores); 0: the GPUs.")
flags.DEFINE_float("collective_timeout_seconds", 300.0, "Fail the run when a training step "
                   "(or another call holding all-reduces) takes this long, waits included: a "
                   "hung peer. The first step, which compiles, is not timed.")
flags.DEFINE_float("connect_timeout_seconds", 120.0, "--strategy=multi_worker: wait this long for "
                   "every worker of TF_CONFIG to join, then fail naming the unreachable ones.")
# Other corpora: the vocabulary is built from the training file and saved beside the checkpoint.
flags.DEFINE_string("train_file", "ptb.train.txt", "Training text file inside --data_path.")
flags.DEFINE_string("valid_file", "ptb.valid.txt", "Validation text file inside --data_path.")
flags.DEFINE_string("test_file", "ptb.test.txt", "Test text file inside --data_path.")
flags.DEFINE_integer("max_vocab_size", None, "Keep only the N most frequent training words (the "
                     "rest read as <unk>); default: every word.")

# After training: the modes below load --checkpoint or the newest checkpoint in --save_path,
# with the vocabulary and config saved beside it.
flags.DEFINE_enum("mode", "train", ["train", "eval", "generate", "score", "export"],
                  "train (resumable); eval: perplexity of --eval_data; generate: sample text after "
                  "--prompt; score: log-probability of each line of --input; export: write "
                  "--export_dir from a checkpoint.")
flags.DEFINE_string("checkpoint", None, "Checkpoint to load instead of the newest in --save_path: "
                    "a prefix such as runs/small/ckpt-13, or a directory such as runs/small/best.")
flags.DEFINE_string("eval_data", "test", "--mode=eval: valid, test (files of --data_path) or the "
                    "path of a text file (words outside the vocabulary read as <unk>).")
flags.DEFINE_string("prompt", "", "--mode=generate: words the text starts with, read as the start "
                    "of a sentence; empty: a new sentence.")
flags.DEFINE_integer("num_words", 50, "--mode=generate: how many words to sample at most.")
flags.DEFINE_float("temperature", 1.0, "--mode=generate: divides the logits; < 1 is more "
                   "conservative, > 1 more random.")
flags.DEFINE_integer("top_k", 0, "--mode=generate: sample among the k most likely words only "
                     "(1: greedy); 0: all words.")
flags.DEFINE_bool("stop_at_eos", True, "--mode=generate: stop at the end of the first sentence; "
                  "false: go on, showing each <eos> as a line break.")
flags.DEFINE_string("input", None, "--mode=score: text file, one sentence per line, or - for "
                    "stdin (a pipe is answered line by line). Output TSV: log_prob (natural log of "
                    "the words and the closing <eos>, after an <eos>), num_words (words + 1 for "
                    "<eos>), perplexity, line (backslash, tab, double quote and every line break "
                    "escaped as in a Python string literal: \\\\, \\t, \\\", \\r, \\n, "
                    "\\x0b, \\x0c, \\x1c-\\x1e, \\x85, \\u2028, \\u2029).")
flags.DEFINE_string("export_dir", None, "Write a SavedModel (signatures next_word, "
                    "sequence_log_prob, vocab, word_ids; vocabulary asset) here after training, or "
                    "from a checkpoint with --mode=export.")


_MODES = ("train", "eval", "generate", "score", "export")


def _resolve_config(vocab_size):
    """The named config with --override applied; vocab_size follows the data."""
    config = configs.get_config(FLAGS.model)
    config = configs.apply_overrides(config, FLAGS.override)
    if config.vocab_size != vocab_size:
        print(f"Note: vocab_size {config.vocab_size} -> {vocab_size} (from the training data)")
        config = configs.apply_overrides(config, {"vocab_size": vocab_size})
    return config


def _run_options():
    """RunOptions from the flags, checked before any data is read."""
    tty = FLAGS.progress == "tty" or (FLAGS.progress == "auto" and sys.stdout.isatty())
    return run.RunOptions(
        seed=FLAGS.seed, rnn_mode=FLAGS.rnn_mode, xla=FLAGS.xla,
        checkpoint_every_minutes=FLAGS.checkpoint_every_minutes,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        keep_checkpoints=FLAGS.keep_checkpoints, progress="tty" if tty else "plain",
        export_dir=FLAGS.export_dir, max_minutes=FLAGS.max_minutes, strategy=FLAGS.strategy,
        num_cpu_replicas=FLAGS.num_cpu_replicas,
        collective_timeout_seconds=FLAGS.collective_timeout_seconds,
        connect_timeout_seconds=FLAGS.connect_timeout_seconds, precision=FLAGS.precision)


_TRAINING = ("train",)
_TRAINED = ("eval", "generate", "score", "export")
# The modes that read each flag that not every mode reads (save_path, model and
# deterministic every mode reads; data_path and the file names say where the data is,
# which any mode may be told harmlessly). The other modes use the checkpoint's config,
# vocabulary and weights.
_READ_BY = {
    **dict.fromkeys(("override", "checkpoint_every_minutes", "checkpoint_every_steps",
                     "max_minutes", "keep_checkpoints", "precision", "progress", "strategy",
                     "num_cpu_replicas", "collective_timeout_seconds", "connect_timeout_seconds",
                     "max_vocab_size"), _TRAINING),
    "seed": ("train", "generate"),
    "export_dir": ("train", "export"),
    "checkpoint": _TRAINED,
    "eval_data": ("eval",),
    **dict.fromkeys(("prompt", "num_words", "temperature", "top_k", "stop_at_eos"),
                    ("generate",)),
    "input": ("score",),
}
# How the model runs: generate and score call it step by step without XLA; export serves
# BlockLSTM (or the basic cell) whatever trained it.
_KERNEL_READ_BY = {"xla": ("train", "eval"), "rnn_mode": ("train", "eval", "generate", "score")}


def _check_flags_apply():
    """A flag this mode does not read: a warning for a training flag (a training command
    reused for eval, say), an error for another mode's, which the user meant to act."""
    unread = [name for name, modes in _READ_BY.items()
              if FLAGS[name].present and FLAGS.mode not in modes]
    meant = [name for name in unread if "train" not in _READ_BY[name]]
    if meant:
        name = meant[0]
        hint = ("; training resumes from the newest snapshot in --save_path" if name ==
                "checkpoint" else "")
        raise inference.InferenceError(f"--{name} applies to --mode="
                                       f"{'|'.join(_READ_BY[name])} only, not --mode="
                                       f"{FLAGS.mode}{hint}")
    if FLAGS.mode in _TRAINED and FLAGS["model"].present and FLAGS.save_path:
        unread.append("model")  # it only names the default --save_path, runs/<model>
    if unread:
        print(f"warning: --mode={FLAGS.mode} ignores {', '.join('--' + n for n in unread)} "
              f"(training's flags; this mode takes the checkpoint's config, vocabulary and "
              f"weights)", file=sys.stderr)
    unused = [name for name, modes in _KERNEL_READ_BY.items()
              if FLAGS[name].present and FLAGS.mode not in modes]
    if unused:
        print(f"warning: --mode={FLAGS.mode} ignores {', '.join('--' + n for n in unused)} "
              f"(it runs the model its own way)", file=sys.stderr)


# Flags naming a file or directory. Given empty (an unset shell variable), each would
# silently mean another thing: runs/<model>, the newest checkpoint, no export, the cwd.
_PATH_FLAGS = ("save_path", "checkpoint", "export_dir", "data_path", "train_file", "valid_file",
               "test_file", "eval_data", "input")


def _check_mode_flags():
    """One-line errors for flag values that cannot work, before anything is loaded or trained."""
    _check_flags_apply()
    empty = [name for name in _PATH_FLAGS if FLAGS[name].present and not FLAGS[name].value]
    if empty:
        raise inference.InferenceError(f"--{empty[0]} is empty (an unset shell variable?); "
                                       f"give it a value, or leave the flag out for its default")
    if sys.stdout is None:
        raise inference.InferenceError("stdout is closed, so the results would be lost; "
                                       "redirect it to a file (or /dev/null)")
    if FLAGS.mode == "generate":
        run.check_seed(FLAGS.seed)
        inference.check_sampling(FLAGS.num_words, FLAGS.temperature, FLAGS.top_k)
    if FLAGS.mode == "score":
        if not FLAGS.input:
            raise inference.InferenceError("--mode=score needs --input=FILE (one sentence a line) "
                                           "or --input=- to read stdin")
        if FLAGS.input == "-" and sys.stdin is None:
            raise inference.InferenceError("--input=- reads stdin, but stdin is closed; pipe the "
                                           "sentences in or pass --input=FILE")
        if FLAGS.input != "-" and not reader.readable_file(FLAGS.input):
            raise inference.InferenceError(f"--input {_not_a_file(FLAGS.input)}: pass a text "
                                           f"file, or - for stdin")
    if FLAGS.mode == "eval" and not _eval_path()[1] and not reader.readable_file(FLAGS.eval_data):
        raise inference.InferenceError(f"--eval_data={FLAGS.eval_data}: "
                                       f"{_not_a_file(FLAGS.eval_data)}; pass valid, test or a "
                                       f"text file")
    if FLAGS.mode == "export" and not FLAGS.export_dir:
        raise inference.InferenceError("--mode=export needs --export_dir=DIR")
    if FLAGS.export_dir and FLAGS.mode in _READ_BY["export_dir"]:
        if FLAGS.mode == "export" or distribute.is_chief(FLAGS.strategy):
            export.check_export_dir(FLAGS.export_dir)
        else:  # only the chief exports: another worker's path may not even exist here
            print("Note: --export_dir is the chief's (worker 0) to write; this worker ignores it",
                  file=sys.stderr)


def _not_a_file(path):
    return f"{path} is a directory" if os.path.isdir(path) else f"file not found: {path}"


def _eval_path():
    """(the file --mode=eval reads, the split it is or None for the user's own file)."""
    name = {"valid": FLAGS.valid_file, "test": FLAGS.test_file}.get(FLAGS.eval_data)
    if name:
        return os.path.join(FLAGS.data_path, name), FLAGS.eval_data
    return FLAGS.eval_data, None


def _check_eval_split():
    """Raises InferenceError if --eval_data names a split whose file is not there."""
    path, split = _eval_path()
    if split and not reader.readable_file(path):
        raise inference.InferenceError(f"--eval_data={split}: {_not_a_file(path)}; run "
                                       f"scripts/get_ptb.sh or pass the right --data_path")


def _warn_if_not_the_training_text(checkpoint, word_to_id):
    """A warning if --data_path's splits are not the text the run trained on (a model of
    another corpus evaluated on PTB, the default --data_path): its checkpoint holds their
    hash. Nothing if they cannot be read (eval names its own file's faults)."""
    try:
        info = checkpoints.read_run_info(checkpoint)
    except checkpoints.CheckpointError:  # unreadable: load_model fell back past it
        return
    if "data_hash" not in info:  # a snapshot from before 2026-12-04
        return
    try:
        corpus = reader.load_corpus(FLAGS.data_path, FLAGS.train_file, FLAGS.valid_file,
                                    FLAGS.test_file, word_to_id=word_to_id)
    except reader.UnknownWords:  # eval's own error follows; the cause is the data path
        print(f"warning: the text in {FLAGS.data_path} is not the text the run was trained on "
              f"(words its vocabulary lacks); pass the --data_path it trained on",
              file=sys.stderr)
        return
    except reader.DataError:
        return
    sizes = corpus.split_sizes
    if corpus.data_hash != info["data_hash"] or info.get("split_sizes", sizes) != sizes:
        print(f"warning: the text in {FLAGS.data_path} is not the text the run was trained "
              f"on (its splits differ); the perplexity below is of this text", file=sys.stderr)


def _eval(model, word_to_id):
    path, split = _eval_path()
    perplexity, num_words, unknown = inference.evaluate_file(
        model, word_to_id, path, jit_compile=kernels.jit_compile(model.rnn_mode, FLAGS.xla),
        own_file=split is None)
    print(f"Perplexity: {perplexity:.3f}")
    print(f"Words: {num_words} (with each line's <eos>; {unknown} not in the vocabulary, read as "
          f"{reader.UNK}; the perplexity is over the {num_words - 1} after the first) in {path}")


def _generate(model, word_to_id):
    prompt = FLAGS.prompt.split()
    unknown = inference.unknown_words(prompt, word_to_id)
    if unknown and reader.UNK in word_to_id:  # without <unk>, generate fails naming them
        print(f"warning: not in the vocabulary, read as {reader.UNK}: {' '.join(unknown)}",
              file=sys.stderr)
    words = inference.sampled_words(model, word_to_id, prompt, FLAGS.num_words,
                                    FLAGS.temperature, FLAGS.top_k, FLAGS.seed, FLAGS.stop_at_eos)
    _print_as_text(itertools.chain(prompt, words))


def _print_as_text(words):
    """inference.words_to_text(words) and a line end, each word written as it comes: a long
    text, interrupted, keeps what was sampled."""
    for piece in inference.text_pieces(words):
        print(piece, end="", flush=True)
    print()


# Backslash, tab, double quote (a csv reader's quote) and every character Python's
# str.splitlines breaks at, escaped as in Python's string literals.
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\r": "\\r", "\n": "\\n", '"': '\\"',
                              **{c: f"\\x{ord(c):02x}" for c in "\x0b\x0c\x1c\x1d\x1e\x85"},
                              **{c: f"\\u{ord(c):04x}" for c in "\u2028\u2029"}})


def tsv_field(text):
    """text as one TSV field that any TSV or csv reader (tab-delimited) reads as one field
    of one row: see _TSV_ESCAPES."""
    return text.translate(_TSV_ESCAPES)


def _score(model, word_to_id):
    lines, waiting = inference.read_lines(FLAGS.input)
    source = "stdin" if FLAGS.input == "-" else FLAGS.input
    read = collections.deque()  # the lines read and not yet printed with their scores
    unknown = 0
    for score in inference.score_lines(model, word_to_id, _remembered(lines, read),
                                       source=source, waiting=waiting):
        # A pipe's or a terminal's writer may wait for each row before the next line.
        print(f"{score.log_prob:.4f}\t{score.num_words}\t{score.perplexity:.3f}\t"
              f"{tsv_field(read.popleft())}", flush=waiting is not None)
        unknown += score.unknown
    if unknown:
        print(f"warning: {unknown} words not in the vocabulary were read as {reader.UNK}",
              file=sys.stderr)


def _remembered(lines, read):
    for line in lines:
        read.append(line)
        yield line


def _use_trained(save_path):
    """--mode=eval|generate|score|export: a checkpoint's model and vocabulary at work."""
    xla = FLAGS.xla and FLAGS.mode in _KERNEL_READ_BY["xla"]
    rnn_mode = FLAGS.rnn_mode if FLAGS.mode in _KERNEL_READ_BY["rnn_mode"] else kernels.AUTO
    kernels.jit_compile(kernels.resolve(rnn_mode), xla)  # fail before loading
    checkpoint = checkpoints.find_checkpoint(save_path, FLAGS.checkpoint)
    if FLAGS.mode == "eval":
        _check_eval_split()  # before a model that takes a while to load
    print(f"Loading {checkpoint}", file=sys.stderr)
    # Without --checkpoint, load_model falls back past a snapshot deleted meanwhile; the
    # model resolves auto by its own cell.
    model, word_to_id, config = checkpoints.load_model(save_path, FLAGS.checkpoint, rnn_mode)
    kernels.jit_compile(model.rnn_mode, xla)
    if FLAGS.mode == "eval" and _eval_path()[1]:
        _warn_if_not_the_training_text(checkpoint, word_to_id)
    if FLAGS.mode == "export":
        path = export.export_saved_model(model, word_to_id, FLAGS.export_dir, config)
        print(f"Exported SavedModel to {path}", flush=True)
    else:
        {"eval": _eval, "generate": _generate, "score": _score}[FLAGS.mode](model, word_to_id)


def _train(save_path):
    options = _run_options()
    corpus = reader.load_corpus(FLAGS.data_path, FLAGS.train_file, FLAGS.valid_file,
                                FLAGS.test_file, max_vocab_size=FLAGS.max_vocab_size)
    config = _resolve_config(corpus.vocab_size)
    run.train_and_evaluate(config, corpus, save_path, options)


def _dispatch():
    _check_mode_flags()
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    save_path = FLAGS.save_path or os.path.join("runs", FLAGS.model)
    if FLAGS.mode == "train":
        _train(save_path)
    else:
        _use_trained(save_path)


def _guess_flag(arg):
    """The flag a stray positional argument probably meant, as '--flag=arg', or None."""
    candidates = [("mode", _MODES), ("model", configs.CONFIGS),
                  ("rnn_mode", (kernels.AUTO, *kernels.NAMES))]
    for flag, values in candidates:
        if arg in values:
            return f"--{flag}={arg}"
    key = arg.partition("=")[0].lstrip("-")
    if "=" in arg and key in FLAGS:
        return f"--{arg.lstrip('-')}"
    if "=" in arg and key:
        return f"--override={arg}"
    if os.path.isdir(arg):
        return f"--data_path={arg}"
    if os.path.isfile(arg):
        return f"--input={arg}"
    return None


def _exit_on_stray_arguments(argv):
    """absl passes unparsed words through: refuse them in one line, not with the whole help."""
    if len(argv) <= 1:
        return
    guess = _guess_flag(argv[1])
    hint = f"; did you mean {guess}?" if guess else "; flags are written --name=value (see --help)"
    print(f"error: unexpected argument {argv[1]!r}{hint}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    """absl's parsing, its errors (an unknown flag, a value out of range) in our one line."""
    try:
        return FLAGS(argv)
    except (flags.Error, ValueError) as e:  # ValueError: --noxla=1, a boolean given a value
        message = " ".join(str(e).split()).removeprefix("ERROR:: ")  # a --flagfile's
        print(f"error: {message} (see --helpshort)", file=sys.stderr)
        sys.exit(2)


_FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _quiet_broken_pipe():
    """stdout's reader went away (`... | head -1`): exit quietly, as Unix tools do."""
    _quiet_stdout()
    sys.exit(128 + signal.SIGPIPE)


def _quiet_stdout():
    """stdout onto /dev/null, so that Python's final flush does not fail again."""
    files.silence(sys.stdout)


def _escape_what_stdout_cannot_encode():
    """A word stdout's encoding cannot hold (an ASCII terminal; a prompt's stray byte, which
    Python reads as a surrogate) prints backslash-escaped, not as a traceback."""
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def main(argv):
    _exit_on_stray_arguments(argv)
    _escape_what_stdout_cannot_encode()
    logging.set_verbosity(logging.WARNING)
    try:
        _dispatch()
        sys.stdout.flush()
    except UserError as e:
        sys.exit(f"error: {e}")
    except run.Stopped as e:
        sys.exit(str(e))
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as e:
        # The run's own files say so as UserErrors; what is left is the output on stdout.
        if e.errno not in _FULL_DISK:
            raise
        _quiet_stdout()
        sys.exit(f"error: cannot write the results to stdout: {e.strerror}; free space or "
                 f"redirect them elsewhere (the output is incomplete)")


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
