"""Tests of interrupts.py: what a signal or a lost output asks of a run."""

import os
import signal
import sys

import pytest

import interrupts


def test_with_several_workers_a_signal_while_starting_waits_to_be_agreed(monkeypatch):
    # One worker stopping on its own before the first step would leave the others in a
    # collective until its timeout: with several, the stop is agreed at a step, as later.
    with interrupts.Interrupts("runs/x", one_worker=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.phase == "starting"
    with pytest.raises(interrupts.Stopped, match=r"while starting"):
        with interrupts.Interrupts("runs/x"):
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_closed_stderr_stays_closed_during_a_run(monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)  # Python's own for a closed descriptor 2
    with interrupts.Interrupts("runs/x"):
        assert sys.stderr is None
        print("dropped", file=sys.stderr)  # as Python drops it, not an AttributeError


def test_a_lost_reader_asks_for_a_stop_once_and_later_writes_go_nowhere():
    class Gone:  # a pipe whose reader went away
        def write(self, *text):
            raise BrokenPipeError(32, "Broken pipe")

        flush = write

    calls = []
    stream = interrupts.StopWhenGone(Gone(), lambda: calls.append(1))
    assert stream.write("epoch 1\n") == len("epoch 1\n")  # not an exception
    stream.flush()
    assert calls == [1, 1]  # each lost write says so
    with interrupts.Interrupts("runs/x") as stop:
        stop.phase = "training"
        stop._output_gone()
        assert stop.signum == signal.SIGPIPE
    with interrupts.Interrupts("runs/x") as stop:
        stop.phase = "testing"  # the test goes on into metrics.json: no stop asked
        stop._output_gone()
        assert stop.signum is None


def test_a_worker_waiting_for_the_chiefs_test_says_a_first_signal_and_goes_on_waiting(capsys):
    # Leaving would fail the chief's finished run as a lost worker; it has nothing to save.
    with interrupts.Interrupts("runs/x", one_worker=False) as stop:
        stop.phase = "waiting"
        os.kill(os.getpid(), signal.SIGTERM)  # no Stopped raised
        assert stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # a second one kills
    assert "the chief (worker 0) is testing the saved weights; waiting for it" in \
        capsys.readouterr().err
