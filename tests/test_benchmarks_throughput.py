"""Tests of benchmarks/throughput.py: mode parsing, the peers, the rounds and their medians."""

import argparse
import os

import pytest

from benchmarks import ceiling, common, throughput
from benchmarks.measure import Measurement
from rnn import kernels


def test_parse_modes_crosses_bare_modes_with_xla():
    modes = throughput.parse_modes("basic,block+xla,basic+xla", "0,1")
    assert [m.label for m in modes] == ["basic", "basic+xla", "block+xla"]
    assert [m.label for m in throughput.parse_modes("block", "0")] == ["block"]


def test_parse_modes_takes_the_kernel_table_and_auto():
    modes = throughput.parse_modes(",".join([*kernels.NAMES, kernels.AUTO]), "0")
    assert [m.rnn_mode for m in modes] == [*kernels.NAMES, "auto"]


def test_parse_modes_takes_a_precision_after_the_mode():
    modes = throughput.parse_modes("fused+xla,fused+xla+bfloat16,fused+bfloat16", "1")
    assert [m.label for m in modes] == ["fused+xla", "fused+xla+bfloat16"]
    assert [m.precision for m in modes] == ["float32", "bfloat16"]
    with pytest.raises(common.BenchmarkError, match=r"with --xla=0: bfloat16 compiles with "
                                                    r"XLA; write fused\+xla\+bfloat16$"):
        throughput.parse_modes("fused+bfloat16", "0,1")


@pytest.mark.parametrize("rnn_modes, message", [
    ("block+xla", r"^small block\+xla: --rnn_mode=block cannot run under --xla"),
    pytest.param("cudnn", r"^small cudnn: rnn_mode cudnn needs a GPU",
                 marks=pytest.mark.skipif(kernels.gpu_available(), reason="a GPU runs cudnn")),
    ("basic+xla+bfloat16", r"^small basic\+xla\+bfloat16: --precision=bfloat16 runs only with "
                           r"--rnn_mode=fused"),
])
def test_a_mode_that_cannot_run_fails_before_any_work(rnn_modes, message, tmp_path):
    args = argparse.Namespace(steps=1, warmup=1, eval_steps=None, rounds=1, configs="small",
                              rnn_modes=rnn_modes, xla="0", env=[], peers="", override=[],
                              ceiling=False, data_path=str(tmp_path / "no data"))
    with pytest.raises(common.BenchmarkError, match=message):
        throughput._plan(args)  # before the data, let alone a measurement


def test_a_bfloat16_mode_is_checked_under_its_variants_environment(tmp_path, monkeypatch):
    # oneDNN capped below avx512_core on an avx512f CPU has no bfloat16 MatMul (it aborts):
    # the variant's cap refuses, while this process's own environment has none.
    monkeypatch.setattr(throughput.measure_lib.precision_lib.host, "cpu_flags",
                        lambda: {"avx2", "avx512f"})
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    args = argparse.Namespace(steps=1, warmup=1, eval_steps=None, rounds=1, configs="small",
                              rnn_modes="fused+xla+bfloat16", xla="1", env=[], peers="",
                              override=[], ceiling=False, data_path=str(tmp_path / "no data"))
    with pytest.raises(common.BenchmarkError, match=r"data"):
        throughput._plan(args)  # the mode passes; the missing data fails next
    args.env = ["ONEDNN_MAX_CPU_ISA=AVX2"]
    with pytest.raises(common.BenchmarkError, match=r"fused\+xla\+bfloat16 \{ONEDNN_MAX_CPU_"
                                                    r"ISA=AVX2\}: --precision=bfloat16 runs its "
                                                    r"products on oneDNN"):
        throughput._plan(args)
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ  # checked without touching ours


def test_a_ceiling_of_a_cell_it_cannot_count_fails_before_any_work(tmp_path):
    args = argparse.Namespace(steps=1, warmup=1, eval_steps=None, rounds=1, configs="small",
                              rnn_modes="basic+xla", xla="0", env=[], peers="",
                              override=["cell=gru"], ceiling=True,
                              data_path=str(tmp_path / "no data"))
    with pytest.raises(common.BenchmarkError, match=r"counts an LSTM's matrix products, not "
                                                    r"cell=gru's"):
        throughput._plan(args)
    assert ceiling.resolve_config("small", ["hidden_size=8"]).hidden_size == 8


@pytest.mark.parametrize("rnn_modes, xla", [("lstm", "0"), ("basic+jit", "0"), ("basic", "2"),
                                            ("", "0"), ("fused+bfloat16+xla", "0"),
                                            ("fused+xla+float32", "0"),
                                            ("fused+xla+bfloat16+bfloat16", "0")])
def test_parse_modes_rejects_bad_specs(rnn_modes, xla):
    with pytest.raises(common.BenchmarkError):
        throughput.parse_modes(rnn_modes, xla)


def test_parse_modes_crosses_every_mode_with_every_environment_variant():
    flags = "XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type="
    modes = throughput.parse_modes("fused+xla,block", "0", ["", flags, "A=1; B=x=y", ""])
    assert [m.label for m in modes] == [
        "fused+xla", "fused+xla {XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=}",
        "fused+xla {A=1 B=x=y}", "block",
        "block {XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=}", "block {A=1 B=x=y}"]
    assert modes[2].env == (("A", "1"), ("B", "x=y"))


@pytest.mark.parametrize("item", ["XLA_FLAGS", "=1", "1A=2", "A B=1"])
def test_parse_env_rejects_what_is_not_name_equals_value(item):
    with pytest.raises(common.BenchmarkError, match="--env item"):
        throughput.parse_env([item])


def test_a_mode_is_measured_with_its_environment_on_top_of_ours(monkeypatch):
    seen = []

    def run_child(cmd, env=None):
        seen.append(env)
        return common.ChildRun(0, '{"config": "small", "mode": "fused+xla", "rnn_mode": "fused", '
                                  '"xla": true, "train_wps": 5.0}\n', "", 1.0)
    monkeypatch.setattr(common, "run_child", run_child)
    monkeypatch.setenv("KEPT", "1")
    args = argparse.Namespace(warmup=1, steps=1, eval_steps=1, data_path="d", seed=0,
                              override=[], stream_eval=False)
    (plain, flagged) = throughput.parse_modes("fused+xla", "0", ["", "XLA_FLAGS=--x=1"])
    assert throughput.measure_in_child(args, "small", plain).mode == "fused+xla"
    result = throughput.measure_in_child(args, "small", flagged)
    assert result.mode == "fused+xla {XLA_FLAGS=--x=1}" and result.train_wps == 5.0
    assert seen[0] is None and seen[1]["XLA_FLAGS"] == "--x=1" and seen[1]["KEPT"] == "1"


def test_peers_run_in_the_environment_as_given(tmp_path, monkeypatch):
    # Our own processes pool host memory (TF_CPU_ALLOCATOR_USE_BFC); a peer runs as shipped.
    (tmp_path / "keras_peer.py").write_text(
        "import json, os\n"
        "bfc = os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')\n"
        "print(json.dumps({'peer': 'fake', 'train_wps': 2.0 if bfc else 1.0}))\n")
    monkeypatch.setattr(throughput, "PEER_ENV",
                        {k: v for k, v in throughput.PEER_ENV.items()
                         if k != "TF_CPU_ALLOCATOR_USE_BFC"})
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")
    args = argparse.Namespace(peer_dir=str(tmp_path), torch_python="", data_path=str(tmp_path),
                              warmup=1, steps=1)
    result = throughput.run_peer(args, "keras", "small")
    assert (result.harness, result.train_wps, result.error) == ("fake", 1.0, None)


def test_a_variant_capping_the_isa_is_noted_as_not_reaching_the_peers(tmp_path):
    # Its ratios compared our capped code with the peers' uncapped code, without a word.
    args = argparse.Namespace(override=[], peer_dir=str(tmp_path), data_path=str(tmp_path),
                              env=["", "ONEDNN_MAX_CPU_ISA=AVX2"])
    [note] = throughput._peer_notes(args, ["torch"])
    assert note.startswith("the peers run without --env, so the ISA caps of "
                           "{ONEDNN_MAX_CPU_ISA=AVX2} do not reach them")
    assert throughput._peer_notes(args, []) == []
    args.env = ["XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type="]  # no cap: like for like
    assert throughput._peer_notes(args, ["torch"]) == []


def test_rounds_alternate_and_report_medians(monkeypatch, capsys):
    calls = []
    peer_wps = iter([100.0, 300.0, 200.0])
    ours = iter([(150.0, 900), (600.0, 700), (500.0, 800)])

    def run_peer(args, peer, name):
        calls.append(peer)
        return throughput.PeerResult(peer, name, train_wps=next(peer_wps), peak_rss_mb=10)

    def measure_in_child(args, name, mode):
        calls.append(mode.label)
        wps, rss = next(ours)
        return Measurement(name, mode.label, mode.rnn_mode, mode.xla, train_wps=wps,
                           eval_wps=2 * wps, peak_rss_mb=rss)
    monkeypatch.setattr(throughput, "run_peer", run_peer)
    monkeypatch.setattr(throughput, "measure_in_child", measure_in_child)
    (mode,) = throughput.parse_modes("fused+xla", "1")
    ceilings = iter([1000.0, None, 800.0])  # the second round's ceiling fails

    def run_ceiling(name, overrides, env=()):
        calls.append(("ceiling", *overrides))
        wps = next(ceilings)
        return (ceiling.Ceiling(name, error="exit 1") if wps is None else
                ceiling.Ceiling(name, train_wps=wps, eval_wps=4 * wps,
                                train_wps_with_loss=wps / 2, eval_wps_with_loss=2 * wps))
    monkeypatch.setattr(throughput, "run_ceiling", run_ceiling)
    args = argparse.Namespace(rounds=3, ceiling=True)
    (result,), (peer,), (summary,) = throughput._measure_rounds(
        args, "small", [mode], ["torch"], ["hidden_size=8"])
    assert calls == ["torch", "fused+xla", ("ceiling", "hidden_size=8")] * 3
    assert summary.train_wps == 900.0 and summary.rounds_train_wps == [1000.0, 800.0]
    assert summary.failed_rounds == ["exit 1"]  # kept, and the exit code counts it
    assert throughput.describe_ceiling_failures([summary]) == [
        "small ceiling: failed in 1 round(s): exit 1"]
    assert result.of_ceiling == pytest.approx({"train_wps": 500 / 900, "eval_wps": 1000 / 3600,
                                               "train_wps_with_loss": 500 / 450,
                                               "eval_wps_with_loss": 1000 / 1800})
    assert peer.train_wps == 200.0 and result.train_wps == 500.0  # medians
    assert peer.rounds_train_wps == [100.0, 300.0, 200.0]
    assert result.eval_wps == 1000.0 and result.peak_rss_mb == 900
    # The median of the rounds' ratios (each side by side in time), not 500 / 200.
    assert result.ratio_to_fastest_peer == pytest.approx(2.0)
    assert result.rounds_ratio_to_fastest_peer == pytest.approx([1.5, 2.0, 2.5])
    assert ("2.00x (torch) rounds 1.50x 2.00x 2.50x | 56% / 28% | 111% / 56% |"
            in throughput.throughput_table([result], [peer]))


def test_a_ceiling_without_the_loss_leaves_its_column_empty():
    # A ceiling from code before the loss's passes were timed (or one round of several
    # without them): the products-only fractions, a dash for the loss's.
    result = Measurement("small", "fused", "fused", False, train_wps=500.0, eval_wps=1000.0)
    rounds = [ceiling.Ceiling("small", train_wps=1000.0, eval_wps=4000.0),
              ceiling.Ceiling("small", train_wps=800.0, eval_wps=3200.0,
                              train_wps_with_loss=700.0, eval_wps_with_loss=3000.0)]
    summary = throughput.add_ceiling([result], rounds)
    assert summary.train_wps_with_loss is None and summary.eval_wps_with_loss is None
    assert result.of_ceiling == pytest.approx({"train_wps": 500 / 900, "eval_wps": 1000 / 3600})
    assert "| 56% / 28% | – |" in throughput.throughput_table([result], [])


def test_a_bfloat16_mode_trains_against_the_bfloat16_ceiling_and_evaluates_against_float32():
    f32 = Measurement("small", "fused+xla", "fused", True, train_wps=500.0, eval_wps=1000.0)
    bf16 = Measurement("small", "fused+xla+bfloat16", "fused", True, precision="bfloat16",
                       train_wps=600.0, eval_wps=1000.0)
    rounds = [ceiling.Ceiling("small", train_wps=1000.0, eval_wps=4000.0,
                              bfloat16_train_wps=1500.0)]
    throughput.add_ceiling([f32, bf16], rounds)
    assert f32.of_ceiling == pytest.approx({"train_wps": 0.5, "eval_wps": 0.25})
    assert bf16.of_ceiling == pytest.approx({"train_wps": 0.4, "eval_wps": 0.25})


def test_rounds_combine_into_medians_of_speeds_and_times_alike():
    rounds = [Measurement("small", "fused", "fused", False, train_seconds=t, train_wps=4e4 / t,
                          eval_seconds=t / 2, eval_wps=8e4 / t, peak_rss_mb=m)
              for t, m in ((1.0, 10), (2.0, 30), (4.0, 20))]
    combined = throughput.combine_rounds(rounds)
    assert (combined.train_wps, combined.train_seconds) == (2e4, 2.0)  # one round's pair
    assert (combined.eval_wps, combined.eval_seconds) == (4e4, 1.0)
    assert combined.peak_rss_mb == 30
    assert combined.rounds_train_wps == [4e4, 2e4, 1e4]
    # Two rounds: the mean of the speeds, and the time those words take at it.
    combined = throughput.combine_rounds(rounds[1:])
    assert combined.train_wps == pytest.approx(1.5e4)
    assert combined.train_seconds * combined.train_wps == pytest.approx(4e4)
    assert combined.eval_seconds * combined.eval_wps == pytest.approx(4e4)


def test_a_failed_round_fails_the_result():
    good = Measurement("small", "fused", "fused", False, train_wps=5.0, peak_rss_mb=1)
    bad = Measurement("small", "fused", "fused", False, error="boom")
    assert throughput.combine_rounds([good, bad, good]) is bad
    failed = throughput.PeerResult("torch", "small", error="failed: x")
    assert throughput.combine_peer_rounds([failed]) is failed
    combined = throughput.combine_peer_rounds(
        [throughput.PeerResult("torch", "small", train_wps=1.0, peak_rss_mb=1), failed])
    assert (combined.train_wps, combined.error) == (None, "failed: x (round 2 of 2)")


def _fake_rounds(monkeypatch, peers_wps, ours_wps, ceilings=()):
    """Fakes the children of _measure_rounds: peers_wps {peer: [wps or None (failed)]},
    ours_wps [wps], ceilings {env: [Ceiling]}."""
    peers_wps = {peer: iter(values) for peer, values in peers_wps.items()}
    ours_wps, ceilings = iter(ours_wps), {env: iter(c) for env, c in dict(ceilings).items()}

    def run_peer(args, peer, name):
        wps = next(peers_wps[peer])
        return throughput.PeerResult(peer, name, train_wps=wps, peak_rss_mb=1,
                                     error=None if wps else "failed: exit -9")

    def measure_in_child(args, name, mode):
        return Measurement(name, mode.label, mode.rnn_mode, mode.xla, train_wps=next(ours_wps),
                           eval_wps=100.0, peak_rss_mb=1)
    monkeypatch.setattr(throughput, "run_peer", run_peer)
    monkeypatch.setattr(throughput, "measure_in_child", measure_in_child)
    monkeypatch.setattr(throughput, "run_ceiling", lambda name, o, env=(): next(ceilings[env]))


def test_a_peer_failed_in_one_round_is_left_out_of_every_rounds_ratio(monkeypatch, capsys):
    # torch (the faster) fails in round 2: every ratio is to keras, and torch shows as failed.
    _fake_rounds(monkeypatch, {"keras": [1000.0] * 3, "torch": [1500.0, None, 1500.0]},
                 [1800.0] * 3)
    (mode,) = throughput.parse_modes("fused+xla", "1")
    (result,), peers, _ = throughput._measure_rounds(
        argparse.Namespace(rounds=3, ceiling=False), "small", [mode], ["keras", "torch"])
    assert result.rounds_ratio_to_fastest_peer == pytest.approx([1.8, 1.8, 1.8])
    assert (result.ratio_to_fastest_peer, result.fastest_peer) == (pytest.approx(1.8), "keras")
    table = throughput.throughput_table([result], peers)
    assert "| small | peer: torch | failed |" in table
    assert [throughput._peer_failed(p) for p in peers] == [False, True]
    assert not throughput._peer_failed(throughput.PeerResult("torch", "test", error="skipped: x"))


def test_the_ratio_names_every_peer_its_rounds_were_taken_against(monkeypatch):
    # torch is the fastest in rounds 1 and 3 and by median, keras in round 2.
    _fake_rounds(monkeypatch, {"keras": [1000.0, 1500.0, 1000.0],
                               "torch": [1400.0, 1000.0, 1400.0]}, [2000.0] * 3)
    (mode,) = throughput.parse_modes("fused+xla", "1")
    (result,), _, _ = throughput._measure_rounds(
        argparse.Namespace(rounds=3, ceiling=False), "small", [mode], ["keras", "torch"])
    assert result.rounds_ratio_to_fastest_peer == pytest.approx([2000 / 1400, 2000 / 1500,
                                                                  2000 / 1400])
    assert (result.ratio_to_fastest_peer, result.fastest_peer) == (
        pytest.approx(2000 / 1400), "torch/keras")


def test_a_ceiling_failed_in_every_round_is_a_failed_summary(monkeypatch):
    _fake_rounds(monkeypatch, {}, [1800.0] * 2,
                 {(): [ceiling.Ceiling("small", error="exit 1: boom")] * 2})
    (mode,) = throughput.parse_modes("fused+xla", "1")
    (result,), _, (summary,) = throughput._measure_rounds(
        argparse.Namespace(rounds=2, ceiling=True), "small", [mode], [])
    assert (summary.error, summary.failed_rounds) == ("exit 1: boom", ["exit 1: boom"] * 2)
    assert summary.train_wps is None and result.of_ceiling is None


def test_each_env_variant_is_held_against_the_ceiling_measured_under_it(monkeypatch):
    capped = (("ONEDNN_MAX_CPU_ISA", "AVX2"),)
    _fake_rounds(monkeypatch, {}, [1000.0, 800.0],
                 {(): [ceiling.Ceiling("small", train_wps=2000.0, eval_wps=4000.0)],
                  capped: [ceiling.Ceiling("small", train_wps=1600.0, eval_wps=3200.0)]})
    plain, under_cap = throughput.parse_modes("fused+xla", "1", ["", "ONEDNN_MAX_CPU_ISA=AVX2"])
    results, _, summaries = throughput._measure_rounds(
        argparse.Namespace(rounds=1, ceiling=True), "small", [plain, under_cap], [])
    assert [s.env for s in summaries] == ["", "{ONEDNN_MAX_CPU_ISA=AVX2}"]
    assert [r.of_ceiling["train_wps"] for r in results] == [0.5, 0.5]


def test_a_ceiling_runs_with_its_variants_environment(monkeypatch):
    seen = []

    def run_child(cmd, env=None):
        seen.append(env)
        return common.ChildRun(1, "", "boom", 1.0)
    monkeypatch.setattr(common, "run_child", run_child)
    assert throughput.run_ceiling("small", [], (("XLA_FLAGS", "--xla_cpu_max_isa=AVX2"),)).error
    throughput.run_ceiling("small", [])
    assert seen[0]["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2" and seen[1] is None


def _peer_args(tmp_path, **kwargs):
    return argparse.Namespace(**dict(dict(
        steps=1, warmup=1, eval_steps=None, rounds=1, configs="small", rnn_modes="fused",
        xla="0", env=[], peers="keras", override=[], ceiling=False, data_path="",
        peer_dir=str(tmp_path), torch_python=""), **kwargs))


def test_a_missing_peer_harness_or_torch_python_fails_before_any_work(make_corpus, tmp_path):
    data = str(make_corpus())
    with pytest.raises(common.BenchmarkError, match=r"keras_peer.py not found; pass --peer_dir"):
        throughput._plan(_peer_args(tmp_path, data_path=data))
    (tmp_path / "torch_peer.py").write_text("")
    not_executable = tmp_path / "python"
    not_executable.write_text("")
    with pytest.raises(common.BenchmarkError, match=r"is not an executable file; pass "
                                                    r"--torch_python"):
        throughput._plan(_peer_args(tmp_path, data_path=data, peers="torch",
                                    torch_python=str(not_executable)))


@pytest.mark.parametrize("printed, error", [
    ('{"train_wps": "fast"}', "failed: train_wps is not a number: 'fast'"),
    ('{"train_wps": -1}', "failed: train_wps -1.0 is not a speed"),
])
def test_a_peer_printing_no_speed_is_a_failed_peer(tmp_path, printed, error):
    (tmp_path / "keras_peer.py").write_text(f"print({printed!r})\n")
    args = argparse.Namespace(peer_dir=str(tmp_path), torch_python="", data_path=str(tmp_path),
                              warmup=1, steps=1)
    assert throughput.run_peer(args, "keras", "small").error == error


def test_a_bfloat16_item_without_xla_suggests_the_kernel_that_runs_it():
    with pytest.raises(common.BenchmarkError, match=r"write fused\+xla\+bfloat16$"):
        throughput.parse_modes("block+bfloat16", "0")


def test_a_failed_measurement_is_a_failed_row():
    (mode,) = throughput.parse_modes("block+xla", "0")
    result = Measurement.failed("small", mode, "exit 1: error: no XLA")
    assert throughput.describe_result(result) == "small block+xla: FAILED (exit 1: error: no XLA)"
    assert "| small | block+xla | failed | | | | | |" in throughput.throughput_table([result], [])
