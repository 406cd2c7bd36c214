"""What a training run shows while it runs: progress lines or a terminal line, TensorBoard scalars."""

import contextlib
import glob
import os
import sys
import time

import tensorflow as tf
from tensorflow.core.util import event_pb2

from errors import UserError


def print_progress(ts, fraction, wps):
    print(f"{fraction:.3f} perplexity: {ts.epoch_perplexity():.3f} speed: {wps:.0f} wps",
          flush=True)


def format_seconds(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class PlainProgress:
    """The tutorial's progress lines, in its format, for logs and pipes.

    training.run_epoch reports where the tutorial does, after its 0-based step
    10 and every tenth of an epoch after (step % (epoch_size // 10) == 10, the
    perplexity over the steps so far, that one included, at fraction
    step / epoch_size), and once more at the epoch's end (1.000).
    """

    def start_epoch(self, ts):
        pass

    def tick(self, ts):
        pass

    def report(self, ts, fraction, wps):
        print_progress(ts, fraction, wps)

    def end_epoch(self):
        pass


class TerminalProgress:
    """One line redrawn in place (carriage return), at most twice a second: fraction, ETA, ..."""

    def __init__(self, epoch_size, words_per_step, stream):
        self.epoch_size = epoch_size
        self.words_per_step = words_per_step
        self.stream = stream
        self._shown = False
        self._last_draw = 0.0

    def start_epoch(self, ts):
        self._start_time = time.monotonic()
        self._start_step = int(ts.step.numpy())

    def tick(self, ts):
        """Polled after every step; reads the step variables only when a redraw is due."""
        if time.monotonic() - self._last_draw < 0.5:
            return
        step = int(ts.step.numpy())
        if step > self._start_step:
            wps = ((step - self._start_step) * self.words_per_step
                   / max(time.monotonic() - self._start_time, 1e-9))
            self.report(ts, step / self.epoch_size, wps)

    def report(self, ts, fraction, wps):
        eta = (1.0 - fraction) * self.epoch_size * self.words_per_step / max(wps, 1e-9)
        self.stream.write(f"\rEpoch: {int(ts.epoch.numpy()) + 1} {100 * fraction:5.1f}% "
                          f"perplexity: {ts.epoch_perplexity():.3f} speed: {wps:.0f} wps "
                          f"ETA: {format_seconds(eta)}\x1b[K")  # \x1b[K: clear the old tail
        self.stream.flush()
        self._shown = True
        self._last_draw = time.monotonic()

    def end_epoch(self):
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class SummaryError(UserError):
    """TensorBoard's event file cannot be written (a full disk, no permission)."""


class Summaries:
    """TensorBoard scalars in save_path/tensorboard, written on the host between steps.

    tf.summary.scalar needs the tensorboard package; tf.summary.write with the
    scalar plugin's metadata (what tf.summary.scalar writes) needs only TensorFlow.
    A failed write raises SummaryError (one line); checkpoints are not touched.
    With `resumed`, a tag's steps up to the last one already in log_dir are not
    written again: a run killed after its last snapshot replays those steps, and
    TensorBoard would draw each of them twice. Without, scalars already there are
    an earlier run's (its checkpoints deleted): they are moved into a directory
    of their own, earlier-<time>/, which TensorBoard shows as a run apart.
    """

    def __init__(self, log_dir, resumed=False):
        self.log_dir = log_dir
        self._written = _last_steps(_event_files(log_dir)) if resumed else {}
        with self._errors():
            if not resumed:
                _set_aside_an_earlier_runs(log_dir)
            self._writer = tf.summary.create_file_writer(log_dir)
        self._metadata = tf.compat.v1.SummaryMetadata(
            plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class="DATA_CLASS_SCALAR")

    @contextlib.contextmanager
    def _errors(self):
        try:
            yield
        except (OSError, tf.errors.OpError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
            raise SummaryError(f"cannot write TensorBoard scalars in {self.log_dir}: "
                               f"{reason.strip().splitlines()[0]}; free space and rerun "
                               f"(training resumes from the last checkpoint)") from None

    def write(self, step, values):
        """values: dict tag -> scalar, all at global step `step`."""
        values = {tag: v for tag, v in values.items() if step > self._written.get(tag, -1)}
        if not values:
            return
        with self._errors():
            with self._writer.as_default(step=step):
                for tag, value in values.items():
                    tf.summary.write(tag, tf.cast(value, tf.float32), metadata=self._metadata)
            self._writer.flush()  # about ten times an epoch: cheap, TensorBoard stays current

    def close(self):
        with self._errors():
            self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # keep the error in flight, not one from closing
            with contextlib.suppress(Exception):
                self._writer.close()


def _set_aside_an_earlier_runs(log_dir):
    """Moves the event files holding scalars in log_dir into log_dir/earlier-<time>/."""
    paths = [path for path in _event_files(log_dir) if _last_steps([path])]
    if not paths:
        return
    aside = os.path.join(log_dir, time.strftime("earlier-%Y%m%d-%H%M%S"))
    os.makedirs(aside, exist_ok=True)
    for path in paths:
        os.rename(path, os.path.join(aside, os.path.basename(path)))
    print(f"Note: TensorBoard scalars of an earlier run in {log_dir} moved to {aside}",
          file=sys.stderr)


def _event_files(log_dir):
    return sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*")))


def _last_steps(paths):
    """{tag: its highest step in the event files `paths`}; a file cut short by a kill counts
    up to where it breaks, and one that cannot be read not at all."""
    last = {}
    for path in paths:
        with contextlib.suppress(tf.errors.OpError):
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    last[value.tag] = max(last.get(value.tag, -1), event.step)
    return last


def make_progress(tty, batches, stream):
    """TerminalProgress when `tty`, else the tutorial's plain lines."""
    if not tty:
        return PlainProgress()
    return TerminalProgress(batches.epoch_size, batches.batch_size * batches.num_steps, stream)
