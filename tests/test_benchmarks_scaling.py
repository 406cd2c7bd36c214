"""Tests of benchmarks/scaling.py: its arithmetic against hand-worked numbers, and the
`scaling` command with fake measuring processes (nothing is timed here)."""

import argparse
import json
import re

import pytest

import reader
from benchmarks import scaling
from helpers import TINY_TEXT

ONE = scaling.WorkerResult(step_seconds=0.1, words_per_second=4000.0, allreduce_seconds=None,
                           gradient_bytes=125_000_000)
TWO = scaling.WorkerResult(step_seconds=0.07, words_per_second=400 / 0.07,
                           allreduce_seconds=0.01, gradient_bytes=125_000_000)


def test_scaling_efficiency_and_ring_time_by_hand():
    assert scaling.efficiency(1000.0, 1500.0) == pytest.approx(0.75)
    # 1.25 GB through a 10 Gb/s link: 1 s; a ring of 2 moves it once, of 8 1.75 times.
    assert scaling.ring_allreduce_seconds(1.25e9, 2, 10.0) == pytest.approx(1.0)
    assert scaling.ring_allreduce_seconds(1.25e9, 8, 10.0) == pytest.approx(1.75)
    assert scaling.ring_allreduce_seconds(1.25e9, 1, 10.0) == 0.0


def test_scaling_projection_by_hand():
    # Compute of the 2-worker step: 0.07 - 0.01 = 0.06 s, so 0.1 / 0.06 = 5/3 per doubling;
    # 8 workers: 0.1 / (5/3)**3 = 0.0216 s of compute + 2 * 7/8 * 1 Gbit / 10 Gb/s = 0.175 s;
    # 400 words per step / 0.1966 s = 2034.6 words/s, 2034.6 / (8 * 4000) = 6.4%.
    wps, efficiency = scaling.project(ONE, TWO, 8, 10.0)
    assert wps == pytest.approx(400 / (0.0216 + 0.175), rel=1e-3)
    assert efficiency == pytest.approx(wps / 32000.0)
    row = scaling.row("small", ONE, TWO)
    assert row.efficiency == pytest.approx((400 / 0.07) / 8000.0)
    assert row.allreduce_share == pytest.approx(0.01 / 0.07)
    assert row.gradient_mb == pytest.approx(125.0)


def test_scaling_projection_refuses_an_allreduce_longer_than_the_step():
    slow = scaling.WorkerResult(0.07, 400 / 0.07, 0.08, 1000)
    with pytest.raises(scaling.common.BenchmarkError, match=r"the machine was busy"):
        scaling.project(ONE, slow, 8, 10.0)


def test_scaling_command_tabulates_fake_workers(benchmark, make_corpus, monkeypatch, capsys):
    calls = []

    def fake(args, config, count):
        calls.append((config, count, args.steps))
        if config == "large":
            raise scaling.common.BenchmarkError("worker 1: exit 1: error: out of memory")
        return ONE if count == 1 else TWO
    monkeypatch.setattr(scaling, "run_workers", fake)
    data = make_corpus(TINY_TEXT)
    code = benchmark.main(["scaling", f"--data_path={data}", "--configs=small,large",
                           "--steps=7"])
    out = capsys.readouterr().out
    assert code == 1  # large failed
    assert calls == [("small", 1, 7), ("small", 2, 7), ("large", 1, 7)]
    # 4 workers (the default): 0.1 / (5/3)**2 = 0.036 s + 2 * 3/4 * 1 Gbit / 10 Gb/s = 0.15 s.
    assert "| small | 4,000 | 5,714 | 71% | 14% | 125.0 | 2,151 (4 x 10 Gb/s) | 13% |" in out
    assert "| large | FAILED: worker 1: exit 1: error: out of memory |" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["command"] == "scaling"
    assert (summary["steps"], summary["workers"], summary["overrides"]) == (7, 4, [])
    small, large = summary["results"]
    assert small["efficiency"] == pytest.approx(5714.2857 / 8000, rel=1e-6)
    assert large["error"].startswith("worker 1")


def test_scaling_dry_run_pins_one_worker_per_core(benchmark, capsys):
    assert benchmark.main(["scaling", "--configs=small", "--dry_run", "--override=num_steps=5"]) \
        == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for core, line in enumerate(lines):
        assert line.startswith(f"small worker on core {core}: taskset -c {core} ")
        assert "_scaling_worker --config=small" in line and "--override=num_steps=5" in line


@pytest.mark.parametrize("argv, message", [
    (["--workers=1"], r"--workers >= 2"),
    (["--gbps=inf"], r"--gbps finite and > 0"),
    # The trainer splits the global batch in rows: small's 20 into 8 workers it refuses.
    (["--workers=8"], r"^error: small: batch_size 20 does not split into 8 workers' rows"),
    (["--override=batch_size=21"], r"batch_size 21 does not split into 2 workers' rows"),
    (["--configs=huge"], r"huge"),
])
def test_scaling_bad_flags_fail_in_one_line(benchmark, make_corpus, capsys, argv, message):
    assert benchmark.main(["scaling", f"--data_path={make_corpus()}", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)


@pytest.mark.parametrize("tied", [False, True])
def test_a_worker_runs_past_an_epoch_and_counts_a_tied_embeddings_gradient_dense(
        make_corpus, capsys, tied):
    # TINY_TEXT * 4 at batch 2 x 3 steps is 18 batches an epoch: 3 + 20 steps go round it.
    data = make_corpus(TINY_TEXT * 4)
    overrides = ["batch_size=2", "num_steps=3", "hidden_size=8", f"tie_embeddings={tied}"]
    args = argparse.Namespace(config="test", override=overrides, data_path=str(data),
                              warmup=3, steps=20)
    assert scaling.measure_worker(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step_seconds"] > 0 and result["allreduce_seconds"] is None  # one device
    vocab = reader.load_corpus(str(data)).vocab_size
    layers = (8 + 8) * 4 * 8 + 4 * 8  # the test config's one LSTM layer: kernel and bias
    softmax = vocab if tied else 8 * vocab + vocab  # bias only when tied
    embedding = vocab * 8 if tied else 2 * 3 * (8 + 1)  # tied: dense; else the looked-up rows
    assert result["gradient_bytes"] == 4 * (layers + softmax + embedding)
