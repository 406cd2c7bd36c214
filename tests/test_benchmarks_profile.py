"""Tests of benchmarks/profile.py: self times of nested events, kinds, and a profiled step."""

import json

import pytest

from benchmarks import profile
from helpers import TINY_TEXT


def test_self_time_is_the_duration_less_the_nested_events():
    # a [0, 100) holds b [10, 40) which holds c [20, 30); d [50, 60) is a's child too;
    # e [100, 120) starts where a ends, so it is a's sibling.
    events = [("a", 0, 100), ("b", 10, 30), ("c", 20, 10), ("d", 50, 10), ("e", 100, 20)]
    assert dict(profile.self_times(events)) == {"a": 60, "b": 20, "c": 10, "d": 10, "e": 20}


def test_self_times_read_events_in_any_order():
    events = [("c", 20, 10), ("a", 0, 100), ("b", 10, 30)]
    assert dict(profile.self_times(events)) == {"a": 70, "b": 20, "c": 10}


def test_innermost_keeps_the_events_that_hold_no_other():
    # a [0, 100) holds b [10, 40), which holds c [20, 30); d [50, 60) is in a; e [100, 120) is not.
    events = [("a", 0, 100), ("b", 10, 30), ("c", 20, 10), ("d", 50, 10), ("e", 100, 20)]
    assert [e[0] for e in profile.innermost(events)] == ["c", "d", "e"]
    assert profile.innermost([]) == []


def test_covered_is_the_length_of_the_union_of_spans():
    # [0, 10) and [5, 20) overlap (20); [30, 40) is apart (10); [32, 35) lies inside it.
    assert profile.covered([(30, 40), (0, 10), (5, 20), (32, 35)]) == 30
    assert profile.covered([(0, 10), (10, 15)]) == 15
    assert profile.covered([]) == 0


@pytest.mark.parametrize("name, expected", [("dot.12", "dot"), ("fusion_3", "fusion"),
                                            ("MatMul", "MatMul"), ("copy.1.2", "copy.1")])
def test_kind_drops_one_numeric_suffix(name, expected):
    assert profile.kind(name) == expected


@pytest.mark.parametrize("name, runtime", [
    ("FunctionRun", True), ("ExecutorDoneCallback", True), ("PrefetchProduce", True),
    ("KernelAndDeviceFunc::Run", True), ("end: MatMul.30", True), ("train_step", True),
    ("MatMul.50", False), ("add_exponential_fusion", False), ("while.15", False),
    ("MatMul:MatMul", False)])
def test_the_runtimes_spans_are_told_from_work(name, runtime):
    # FunctionRun (the span of a function's whole run on the caller's thread) was counted as
    # work: a row of the work's table, and wall time "in traced work" while it only waited.
    assert profile.is_runtime(name) == runtime


def test_profile_command_tables_the_events_of_real_steps(benchmark, make_corpus, capsys):
    data = make_corpus(train=TINY_TEXT * 20)
    assert benchmark.main(["profile", f"--data_path={data}", "--configs=test",
                           "--rnn_mode=fused", "--xla=0", "--warmup=2", "--steps=3",
                           "--top=5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    (result,) = json.loads(lines[-1])["results"]
    assert lines[0].startswith("test fused: 3 train steps, ")
    assert result["steps"] == 3 and 0 < result["traced_ms"] <= result["wall_ms"]
    assert " ms with no thread in traced work; " in lines[0]
    # The step's matrix products run as TensorFlow's MatMul ops here (no XLA): they are seen.
    names = {e["name"] for e in result["events"]}
    assert any("MatMul" in name for name in names), sorted(names)[:40]
    # A training step's backward pass and update are seen (the eval test checks they are not).
    assert any("gradient_tape" in name for name in names), sorted(names)[:40]
    assert any("Assign" in name for name in names), sorted(names)[:40]
    assert all(e["self_ms"] >= 0 and e["count"] >= 1 for e in result["events"])
    assert sum(k["self_ms"] for k in result["kinds"]) == pytest.approx(
        sum(e["self_ms"] for e in result["events"]))


def test_profile_eval_phase_tables_the_forward_step(benchmark, make_corpus, capsys):
    data = make_corpus(train=TINY_TEXT * 20, valid=TINY_TEXT * 20)
    assert benchmark.main(["profile", f"--data_path={data}", "--configs=test",
                           "--rnn_mode=fused", "--xla=0", "--phase=eval", "--warmup=1",
                           "--steps=2", "--top=5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    (result,) = json.loads(lines[-1])["results"]
    assert lines[0].startswith("test fused: 2 eval steps, ") and result["phase"] == "eval"
    names = {e["name"] for e in result["events"]}
    assert any("MatMul" in name for name in names), sorted(names)[:40]
    # The eval step's function ran, and no backward pass or variable update did.
    assert any("eval_step" in name for name in names)
    assert not any("gradient_tape" in name or "Assign" in name for name in names), sorted(names)


@pytest.mark.parametrize("flag", ["--steps=0", "--warmup=0", "--top=0"])
def test_profile_rejects_bad_steps(benchmark, tiny_corpus, capsys, flag):
    assert benchmark.main(["profile", f"--data_path={tiny_corpus}", "--configs=test",
                           flag]) == 2
    assert capsys.readouterr().err.startswith("error: --steps, --warmup and --top must be >= 1")


def test_profile_checks_every_config_first_and_runs_nothing_on_a_dry_run(benchmark, tiny_corpus,
                                                                        capsys):
    # A later config's refusal came after the earlier ones were profiled, and --dry_run
    # profiled everything.
    assert benchmark.main(["profile", f"--data_path={tiny_corpus}", "--configs=test,awd",
                           "--rnn_mode=block", "--xla=0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ")
    assert benchmark.main(["profile", f"--data_path={tiny_corpus}", "--configs=test",
                           "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "test auto(fused)+xla: 10 warm-up and 20 profiled train steps"]


@pytest.mark.parametrize("command", ["profile", "scaling", "throughput"])
def test_a_vocabulary_size_override_is_refused_not_dropped(benchmark, tiny_corpus, capsys,
                                                           command):
    assert benchmark.main([command, f"--data_path={tiny_corpus}", "--configs=test",
                           "--override=vocab_size=50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: vocab_size follows the data's vocabulary") and \
        len(err.strip().splitlines()) == 1


def test_the_window_opens_after_the_warmup_and_closes_after_the_steps_inside_the_epoch():
    # The profiled stretch lies within run_epoch's steps, so building the tf.data pipeline
    # before the first step (30-40 ms for PTB's training split) is neither profiled nor timed.
    class Window:
        def __init__(self):
            self.events = []

        def open(self):
            self.events.append("open")

        def close(self):
            self.events.append("close")

    class Step:
        def numpy(self):
            return 0

    class TrainState:
        global_step = Step()

    window = Window()
    hooks = profile._WindowHooks(2, 3, window)
    stops = []
    for _ in range(5):
        stops.append(hooks.after_step(TrainState(), None))
        window.events.append("step")
    assert window.events == ["step", "open", "step", "step", "step", "close", "step"]
    assert stops == [False, False, False, False, True]
