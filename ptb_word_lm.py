"""Trains and evaluates the PTB word-level LSTM language model; the only reader of FLAGS.

    python ptb_word_lm.py --model=small
    python ptb_word_lm.py --model=medium --save_path=runs/medium   # rerun to resume
    python ptb_word_lm.py --mode=eval --save_path=runs/small --eval_data=test
    python ptb_word_lm.py --mode=generate --save_path=runs/small --prompt="the company said"
    python ptb_word_lm.py --mode=score --save_path=runs/small --input=sentences.txt
    python ptb_word_lm.py --mode=export --save_path=runs/small --export_dir=export/small
"""

import io
import itertools
import json
import os
import signal
import sys
import time

# Keep TensorFlow's C++ start-up chatter out of the tutorial's output lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# Pool host memory in TensorFlow's BFC allocator: otherwise the compiled step's
# temporaries (~100 MB) come fresh from mmap on every call, ~11k page faults
# per small-config step (measured 20-30% of the step). TF_CPU_ALLOCATOR_USE_BFC=false
# turns it off.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

import configs  # noqa: E402
import monitoring  # noqa: E402
import reader  # noqa: E402
from rnn import kernels  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "small", list(configs.CONFIGS), "Model config (the tutorial's table).")
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
flags.DEFINE_multi_string("override", [], "Config override key=value, e.g. --override=num_steps=35; "
                          "repeatable.")
flags.DEFINE_float("checkpoint_every_minutes", 10.0, "Also save a checkpoint this often mid-epoch "
                   "(0: only at epoch ends and on SIGINT/SIGTERM).")
flags.DEFINE_integer("checkpoint_every_steps", 0, "Also save a checkpoint every N training steps "
                     "(0: off).")
flags.DEFINE_integer("keep_checkpoints", 3, "How many of the newest checkpoints to keep "
                     "(the best by validation perplexity is kept apart).")
flags.DEFINE_bool("deterministic", False, "Enable TensorFlow op determinism (bitwise-repeatable "
                  "runs and resumes; may be slower).")
flags.DEFINE_bool("xla", None, "Compile the training and evaluation steps with XLA (default: "
                  "on for --rnn_mode=basic and fused; auto picks fused on a CPU).")
flags.DEFINE_enum("progress", "auto", ["auto", "plain", "tty"],
                  "Training progress: plain prints the tutorial's lines each tenth of an epoch; "
                  "tty redraws one line (fraction, perplexity, speed, ETA); auto: tty on a "
                  "terminal.")
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
                    "stdin. Output TSV: log_prob (natural log of the words and the closing <eos>, "
                    "after an <eos>), num_words (words + 1 for <eos>), perplexity, line.")
flags.DEFINE_string("export_dir", None, "Write a SavedModel (signatures next_word, "
                    "sequence_log_prob, vocab, word_ids; vocabulary asset) here after training, or "
                    "from a checkpoint with --mode=export.")


def _resolve_config(vocab_size):
    """The named config with --override applied; vocab_size follows the data."""
    config = configs.get_config(FLAGS.model)
    config = configs.apply_overrides(config, FLAGS.override)
    if config.vocab_size != vocab_size:
        print(f"Note: vocab_size {config.vocab_size} -> {vocab_size} (from the training data)")
        config = configs.apply_overrides(config, {"vocab_size": vocab_size})
    return config


def _resolve_rnn_mode():
    """--rnn_mode with auto resolved (cuDNN on a GPU, else fused), checked against --xla."""
    rnn_mode = kernels.resolve(FLAGS.rnn_mode)
    kernels.jit_compile(rnn_mode, FLAGS.xla)
    return rnn_mode


def _use_xla(rnn_mode):
    """--xla if given, else the kernel's default (on for fused and basic)."""
    return kernels.jit_compile(rnn_mode, FLAGS.xla)


class _Interrupts:
    """Turns the first SIGINT/SIGTERM into a request to checkpoint and exit; a second one kills."""

    def __init__(self):
        self.signum = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)
        print(f"\nReceived signal {signum}: saving a checkpoint, then exiting "
              f"(send it again to exit at once).", file=sys.stderr, flush=True)


def _write_json(path, obj):
    """Atomically replaces path with obj as JSON."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _make_report(progress, summaries, train_step):
    """The run_epoch report hook: progress display plus TensorBoard scalars."""
    def report(ts, fraction, wps):
        progress.report(ts, fraction, wps)
        summaries.write(int(ts.global_step.numpy()), {
            "train/perplexity": ts.epoch_perplexity(), "train/learning_rate": ts.lr.numpy(),
            "train/grad_norm": train_step.last[1], "train/words_per_second": wps})
    return report


def _with_tick(progress, should_stop):
    """should_stop that also lets the progress display redraw after every step."""
    def hook(ts):
        progress.tick(ts)
        return should_stop(ts)
    return hook


def _make_stopper(checkpointer, interrupts):
    """A should_stop(ts) hook: saves periodic checkpoints; True once a signal arrived."""
    last = {"time": time.time()}

    def should_stop(ts):
        every_steps = FLAGS.checkpoint_every_steps
        due = (interrupts.signum is not None
               or (FLAGS.checkpoint_every_minutes > 0
                   and time.time() - last["time"] > 60 * FLAGS.checkpoint_every_minutes)
               or (every_steps > 0 and int(ts.global_step.numpy()) % every_steps == 0))
        if due:
            ts.check_finite()
            checkpointer.save()
            last["time"] = time.time()
        return interrupts.signum is not None
    return should_stop


def _open_run(config, corpus, rnn_mode, save_path, epoch_size):
    """Checks save_path, builds the TrainState and restores this run's newest checkpoint."""
    import checkpoints
    import training

    checkpoints.check_writable(save_path)
    ts = training.TrainState(config, rnn_mode=rnn_mode, seed=FLAGS.seed)
    run_info = {"config": configs.to_dict(config), "seed": FLAGS.seed,
                "vocab_hash": reader.vocab_hash(corpus.word_to_id)}
    checkpointer = checkpoints.Checkpointer(save_path, ts, run_info, FLAGS.keep_checkpoints)
    restored = checkpointer.restore()
    if restored:
        print(f"Resuming from {restored}: epoch {int(ts.epoch.numpy()) + 1}, "
              f"step {int(ts.step.numpy())} of {epoch_size}")
    else:
        ts.reset_epoch(0)
    reader.save_vocab(corpus.word_to_id, os.path.join(save_path, "vocab.txt"))
    print(f"Config: {json.dumps(configs.to_dict(config))}")
    parameters = sum(int(v.shape.num_elements()) for v in ts.model.trainable_variables)
    print(f"rnn_mode: {rnn_mode}  xla: {_use_xla(rnn_mode)}  parameters: {parameters:,}")
    return ts, checkpointer


def _train(config, corpus, rnn_mode, save_path):
    """The tutorial's main loop, resumable: epochs of training, validation, then the test."""
    import training

    train_batches = reader.ptb_producer(corpus.train, config.batch_size, config.num_steps)
    valid_batches = reader.ptb_producer(corpus.valid, config.batch_size, config.num_steps)
    ts, checkpointer = _open_run(config, corpus, rnn_mode, save_path, train_batches.epoch_size)
    interrupts = _Interrupts()
    tty = FLAGS.progress == "tty" or (FLAGS.progress == "auto" and sys.stdout.isatty())
    progress = monitoring.make_progress(tty, train_batches, sys.stdout)
    summaries = monitoring.Summaries(os.path.join(save_path, "tensorboard"))
    # KeepLastStep: the report logs the last step's grad_norm without a per-step fetch.
    train_step = monitoring.KeepLastStep(
        training.make_train_step(ts, jit_compile=_use_xla(rnn_mode)))
    valid_step = training.make_eval_step(ts.model, config.batch_size, config.num_steps,
                                         jit_compile=_use_xla(rnn_mode))
    report = _make_report(progress, summaries, train_step)
    should_stop = _with_tick(progress, _make_stopper(checkpointer, interrupts))
    history = checkpointer.get_history()
    metrics_path = os.path.join(save_path, "metrics.json")
    while int(ts.epoch.numpy()) < config.max_max_epoch:
        epoch = int(ts.epoch.numpy())
        print(f"Epoch: {epoch + 1} Learning rate: {ts.lr.numpy():.3f}", flush=True)
        start = time.time()
        progress.start_epoch(ts)
        try:
            finished = training.run_epoch(ts, train_step, train_batches, report, should_stop)
        finally:
            progress.end_epoch()
        if not finished:
            sys.exit(f"Stopped at epoch {epoch + 1} step {int(ts.step.numpy())}; checkpoint saved "
                     f"in {save_path}: run the same command to resume.")
        seconds = time.time() - start
        train_ppl = ts.epoch_perplexity()
        print(f"Epoch: {epoch + 1} Train Perplexity: {train_ppl:.3f}", flush=True)
        valid_ppl = training.evaluate(ts.model, valid_batches, valid_step)
        print(f"Epoch: {epoch + 1} Valid Perplexity: {valid_ppl:.3f}", flush=True)
        summaries.write(int(ts.global_step.numpy()), {"valid/perplexity": valid_ppl})
        best = all(valid_ppl < h["valid_perplexity"] for h in history)
        history.append({"epoch": epoch + 1, "learning_rate": float(ts.lr.numpy()),
                        "train_perplexity": train_ppl, "valid_perplexity": valid_ppl,
                        "train_seconds": seconds})
        checkpointer.set_history(history)
        ts.reset_epoch(epoch + 1)  # the snapshot resumes at the start of the next epoch
        checkpointer.save(best=best)
        _write_json(metrics_path, {"config": configs.to_dict(config), "epochs": history})
        if interrupts.signum is not None:
            sys.exit(f"Stopped after epoch {epoch + 1}; checkpoint saved in {save_path}: "
                     f"run the same command to resume.")
    _test(ts, corpus, config, history, metrics_path, summaries)


def _test(ts, corpus, config, history, metrics_path, summaries):
    """The tutorial's test perplexity (one stream, state carried), recorded and optionally exported."""
    import training

    start = time.time()
    test_ppl = training.stream_perplexity(ts.model, corpus.test,
                                          jit_compile=_use_xla(ts.model.rnn_mode))
    print(f"Test Perplexity: {test_ppl:.3f}", flush=True)
    print(f"(test evaluation: {time.time() - start:.1f}s, one stream, state carried)")
    _write_json(metrics_path, {"config": configs.to_dict(config), "epochs": history,
                               "test_perplexity": test_ppl})
    summaries.write(int(ts.global_step.numpy()), {"test/perplexity": test_ppl})
    summaries.close()
    if FLAGS.export_dir:
        _export(ts.model, corpus.word_to_id, config)


def _check_mode_flags():
    """One-line errors for flag values that cannot work, before anything is loaded or trained."""
    import export
    import inference
    if FLAGS.mode == "generate":
        inference.check_sampling(FLAGS.num_words, FLAGS.temperature, FLAGS.top_k)
    if FLAGS.mode == "score":
        if not FLAGS.input:
            raise inference.InferenceError("--mode=score needs --input=FILE (one sentence a line) "
                                           "or --input=- to read stdin")
        if FLAGS.input != "-" and not os.path.isfile(FLAGS.input):
            raise inference.InferenceError(f"--input file not found: {FLAGS.input}")
    if (FLAGS.mode == "eval" and FLAGS.eval_data not in ("valid", "test")
            and not os.path.isfile(FLAGS.eval_data)):
        raise inference.InferenceError(f"--eval_data={FLAGS.eval_data}: not valid, test or an "
                                       f"existing text file")
    if FLAGS.mode == "export" and not FLAGS.export_dir:
        raise inference.InferenceError("--mode=export needs --export_dir=DIR")
    if FLAGS.export_dir:
        export.check_export_dir(FLAGS.export_dir)


def _eval(model, word_to_id):
    import inference
    name = {"valid": FLAGS.valid_file, "test": FLAGS.test_file}.get(FLAGS.eval_data)
    path = os.path.join(FLAGS.data_path, name) if name else FLAGS.eval_data
    perplexity, num_words, unknown = inference.evaluate_file(
        model, word_to_id, path, jit_compile=_use_xla(model.rnn_mode))
    print(f"Perplexity: {perplexity:.3f}")
    print(f"Words: {num_words} (with each line's <eos>; {unknown} not in the vocabulary, read as "
          f"{reader.UNK}) in {path}")


def _generate(model, word_to_id):
    import inference
    prompt = FLAGS.prompt.split()
    unknown = inference.unknown_words(prompt, word_to_id)
    if unknown and reader.UNK in word_to_id:  # without <unk>, generate fails naming them
        print(f"warning: not in the vocabulary, read as {reader.UNK}: {' '.join(unknown)}",
              file=sys.stderr)
    words = inference.generate(model, word_to_id, prompt, FLAGS.num_words, FLAGS.temperature,
                               FLAGS.top_k, FLAGS.seed, FLAGS.stop_at_eos)
    print(inference.words_to_text(prompt + words))


def _read_lines(path):
    """Lines of a UTF-8 file or of stdin ("-"), without their line ends."""
    import inference
    name = "stdin" if path == "-" else path
    stream = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8") if path == "-"
              else open(path, encoding="utf-8"))
    try:
        for line in stream:
            yield line.rstrip("\n")
    except UnicodeDecodeError as e:
        raise inference.InferenceError(f"{name} is not UTF-8 (byte {e.object[e.start]:#04x}); "
                                       f"re-encode it as UTF-8") from None
    finally:
        if path != "-":
            stream.close()


def _score(model, word_to_id):
    import inference
    lines, to_score = itertools.tee(_read_lines(FLAGS.input))
    unknown = 0
    for line, score in zip(lines, inference.score_lines(model, word_to_id, to_score)):
        print(f"{score.log_prob:.4f}\t{score.num_words}\t{score.perplexity:.3f}\t{line}")
        unknown += score.unknown
    if unknown:
        print(f"warning: {unknown} words not in the vocabulary were read as {reader.UNK}",
              file=sys.stderr)


def _export(model, word_to_id, config):
    import export
    path = export.export_saved_model(model, word_to_id, FLAGS.export_dir, config)
    print(f"Exported SavedModel to {path}", flush=True)


def _run_trained(save_path):
    """--mode=eval|generate|score|export: a checkpoint's model and vocabulary at work."""
    import inference
    path = inference.find_checkpoint(save_path, FLAGS.checkpoint)
    model, word_to_id, config = inference.load_model(save_path, path, _resolve_rnn_mode())
    print(f"Loaded {path}", file=sys.stderr)
    if FLAGS.mode == "export":
        _export(model, word_to_id, config)
    else:
        {"eval": _eval, "generate": _generate, "score": _score}[FLAGS.mode](model, word_to_id)


def _run():
    _check_mode_flags()
    if FLAGS.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    save_path = FLAGS.save_path or os.path.join("runs", FLAGS.model)
    if FLAGS.mode != "train":
        _run_trained(save_path)
        return
    corpus = reader.load_corpus(FLAGS.data_path, FLAGS.train_file, FLAGS.valid_file,
                                FLAGS.test_file, max_vocab_size=FLAGS.max_vocab_size)
    config = _resolve_config(corpus.vocab_size)
    rnn_mode = _resolve_rnn_mode()
    _train(config, corpus, rnn_mode, save_path)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    import checkpoints
    import export
    import inference
    import training
    user_errors = (reader.DataError, configs.ConfigError, checkpoints.CheckpointError,
                   training.Diverged, kernels.NoGPUError, kernels.XLAError, inference.InferenceError,
                   export.ExportError)
    try:
        _run()
    except user_errors as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
