"""How a run stops: a signal, or an output whose reader went away, asks it to save and stop.

    with interrupts.Interrupts(save_path, one_worker=True) as stop:
        ...  # the training loop checks stop.signum at its steps; stop.phase says what it does

The training loop (run.py) reads `signum` at each step and saves before it
raises Stopped; before the first step and during the test a signal raises at once.
"""

import signal
import sys

import files


class Stopped(Exception):
    """A signal stopped the run; the message says what was kept and how to go on."""


class Interrupts:
    """While entered: the first SIGINT/SIGTERM asks the run to checkpoint and stop; a second kills.

    Until the first training step has run (building, restoring, tracing and
    compiling, which can take a minute: a scheduler's grace period) and during
    the test evaluation and the export (`phase` "starting", "testing" and
    "exporting"), the first signal stops at once: there is nothing unsaved. Once all is recorded
    ("done"), it is only said: the run ends as it would. A worker waiting for
    the chief's test ("waiting") only says so: leaving would fail the chief. An output
    whose reader went away (`... | tee log`, whose tee the same Ctrl-C killed)
    asks the same as a signal, as SIGPIPE, and is sent to /dev/null from then on:
    the run saves and stops at the next step instead of dying of the write.
    """

    def __init__(self, save_path, one_worker=True):
        self.save_path = save_path
        self.one_worker = one_worker  # several: every stop is agreed at a step, never at once
        self.signum = None
        # Then "training" (signals are agreed, saved), then "testing" for the chief and
        # "waiting" (for its test: a first signal is only said) for the other workers, then
        # "exporting" (the test recorded: a signal stops at once) and "done" (all recorded:
        # a first signal is only said, the run ends as it would).
        self.phase = "starting"

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self._streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (None if stream is None  # closed: Python drops its prints
                                  else StopWhenGone(stream, self._output_gone)
                                  for stream in self._streams)
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._streams
        for signum, handler in self._previous.items():
            # None: a handler set outside Python (TensorFlow's multi-worker SIGTERM notifier).
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, signal.SIG_DFL)
        if self.phase == "starting" and self.one_worker:
            raise Stopped(f"Stopped by signal {signum} while starting, before any step; what "
                          f"was trained is in {self.save_path}: run the same command to go on.")
        if self.phase == "testing":
            raise Stopped(f"Stopped by signal {signum} after training; the trained weights are "
                          f"saved in {self.save_path}: run the same command to run the test.")
        if self.phase == "exporting":
            raise Stopped(f"Stopped by signal {signum} while exporting, after the test (its "
                          f"perplexity is in {self.save_path}/metrics.json); an earlier export "
                          f"is kept: run the same command to test and export again.")
        if self.phase == "done":
            print(f"\nReceived signal {signum}: the run is complete; exiting.", file=sys.stderr,
                  flush=True)
            return
        if self.phase == "waiting":  # leaving would fail the chief's run as a lost worker
            print(f"\nReceived signal {signum}: the chief (worker 0) is testing the saved "
                  f"weights; waiting for it (send it again to exit at once).", file=sys.stderr,
                  flush=True)
            return
        print(f"\nReceived signal {signum}: saving a checkpoint, then exiting "
              f"(send it again to exit at once).", file=sys.stderr, flush=True)

    def _output_gone(self):
        if self.signum is None and self.phase in ("starting", "training"):  # a test goes
            # on, into metrics.json
            self.signum = signal.SIGPIPE


class StopWhenGone:
    """A text stream whose lost reader (BrokenPipeError) calls `gone` and silences it."""

    def __init__(self, stream, gone):
        self._stream, self._gone = stream, gone

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def write(self, text):
        return self._guarded(self._stream.write, text)

    def flush(self):
        return self._guarded(self._stream.flush)

    def _guarded(self, method, *args):
        try:
            return method(*args)
        except BrokenPipeError:
            files.silence(self._stream)  # the driver's last line goes nowhere, not fails
            self._gone()
            return len(args[0]) if args else None
