"""Tests of scripts/benchmark.py: mode parsing, the timed loops, the CLI's JSON line, the tables."""

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import configs
import reader
import training
from helpers import TINY_TEXT

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def benchmark():
    """scripts/benchmark.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_modes_crosses_bare_modes_with_xla(benchmark):
    modes = benchmark.parse_modes("basic,block+xla,basic+xla", "0,1")
    assert [m.label for m in modes] == ["basic", "basic+xla", "block+xla"]
    assert [m.label for m in benchmark.parse_modes("block", "0")] == ["block"]


@pytest.mark.parametrize("rnn_modes, xla", [("lstm", "0"), ("basic+jit", "0"), ("basic", "2"),
                                            ("", "0")])
def test_parse_modes_rejects_bad_specs(benchmark, rnn_modes, xla):
    with pytest.raises(benchmark.BenchmarkError):
        benchmark.parse_modes(rnn_modes, xla)


def _tiny_state(batch_size=2, num_steps=3):
    config = dataclasses.replace(configs.TEST, vocab_size=10, batch_size=batch_size,
                                 num_steps=num_steps)
    ts = training.TrainState(config, rnn_mode="basic")
    ts.reset_epoch(0)
    ids = np.arange(20, dtype=np.int32) % 10  # batch_len 10 -> epoch_size 3
    return ts, reader.ptb_producer(ids, batch_size, num_steps)


def test_time_training_runs_warmup_plus_steps_going_round_a_short_split(benchmark):
    ts, batches = _tiny_state()
    seconds = benchmark.time_training(ts, batches, warmup=2, steps=5, jit_compile=False)
    assert seconds > 0
    assert int(ts.global_step.numpy()) == 7
    assert int(ts.epoch.numpy()) == 2 and int(ts.step.numpy()) == 1  # 3 + 3 + 1 steps


def test_time_evaluation_goes_round_a_short_split(benchmark):
    ts, batches = _tiny_state()
    assert benchmark.time_evaluation(ts.model, batches, warmup=1, steps=7) > 0


def test_throughput_prints_json_last_line(make_corpus):
    data = make_corpus(train=TINY_TEXT * 20)  # 560 ids: 13 batches of the test config's 20 x 2
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "throughput", f"--data_path={data}", "--configs=test",
         "--rnn_modes=block", "--warmup=2", "--steps=3", "--stream_eval"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert any(line.startswith("test block: train ") for line in lines)
    assert "| config | mode | train wps |" in out.stdout
    (result,) = summary["results"]
    assert (result["config"], result["mode"], result["train_steps"]) == ("test", "block", 3)
    for key in ("train_wps", "eval_wps", "peak_rss_mb", "stream_eval_seconds"):
        assert result[key] > 0, key
    assert summary["tf_version"] and summary["host"]["cpu_cores"] >= 1
    assert "cpu_vector_isa" in summary["host"]


def test_throughput_missing_data_fails_in_one_line(benchmark, tmp_path, capsys):
    code = benchmark.main(["throughput", f"--data_path={tmp_path / 'nowhere'}"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no PTB data at --data_path=")


def test_perplexity_collect_only_tabulates_metrics(benchmark, make_corpus, tmp_path, capsys):
    data = make_corpus(train=TINY_TEXT * 20)  # 560 ids
    config = dataclasses.replace(configs.TEST, batch_size=4, num_steps=5, max_max_epoch=2)
    run = tmp_path / "runs" / "test"
    run.mkdir(parents=True)
    epochs = [{"epoch": 1, "learning_rate": 1.0, "train_perplexity": 60.0,
               "valid_perplexity": 50.0, "train_seconds": 2.0},
              {"epoch": 2, "learning_rate": 0.5, "train_perplexity": 40.0,
               "valid_perplexity": 45.5, "train_seconds": 2.32}]
    (run / "metrics.json").write_text(json.dumps(
        {"config": configs.to_dict(config), "epochs": epochs, "test_perplexity": 44.1}))
    output = tmp_path / "table.md"
    code = benchmark.main(["perplexity", f"--data_path={data}", "--configs=test",
                           f"--root={tmp_path / 'runs'}", "--collect_only",
                           f"--output={output}"])
    assert code == 0
    # batch_len 560 // 4 = 140, epoch_size (140 - 1) // 5 = 27: 27 * 4 * 5 = 540 words an
    # epoch, 1080 in 4.32 s of training = 250 words/s.
    row = "| test | 2/2 | 40.00 | 45.50 | 44.10 | 0:00:04 | – | 250 |"
    assert row in capsys.readouterr().out.splitlines()
    assert row in output.read_text().splitlines()


def test_peers_run_in_the_environment_as_given(benchmark, tmp_path, monkeypatch):
    # Our own processes pool host memory (TF_CPU_ALLOCATOR_USE_BFC); a peer runs as shipped.
    (tmp_path / "keras_peer.py").write_text(
        "import json, os\n"
        "bfc = os.environ.get('TF_CPU_ALLOCATOR_USE_BFC')\n"
        "print(json.dumps({'peer': 'fake', 'train_wps': 2.0 if bfc else 1.0}))\n")
    monkeypatch.setattr(benchmark, "PEER_ENV",
                        {k: v for k, v in benchmark.PEER_ENV.items()
                         if k != "TF_CPU_ALLOCATOR_USE_BFC"})
    monkeypatch.setenv("TF_CPU_ALLOCATOR_USE_BFC", "true")
    args = argparse.Namespace(peer_dir=str(tmp_path), torch_python="", data_path=str(tmp_path),
                              warmup=1, steps=1)
    result = benchmark.run_peer(args, "keras", "small")
    assert (result["harness"], result["train_wps"]) == ("fake", 1.0)


def test_rounds_alternate_and_report_medians(benchmark, monkeypatch, capsys):
    calls = []
    peer_wps = iter([100.0, 300.0, 200.0])
    ours = iter([(150.0, 900), (600.0, 700), (500.0, 800)])

    def run_peer(args, peer, name):
        calls.append(peer)
        return {"peer": peer, "config": name, "train_wps": next(peer_wps), "peak_rss_mb": 10}

    def measure_in_child(args, name, mode):
        calls.append(mode.label)
        wps, rss = next(ours)
        return {"config": name, "mode": mode.label, "train_wps": wps, "eval_wps": 2 * wps,
                "stream_eval_seconds": None, "peak_rss_mb": rss}
    monkeypatch.setattr(benchmark, "run_peer", run_peer)
    monkeypatch.setattr(benchmark, "measure_in_child", measure_in_child)
    (mode,) = benchmark.parse_modes("fused+xla", "1")
    ceilings = iter([1000.0, None, 800.0])  # the second round's ceiling fails

    def run_ceiling(name):
        calls.append("ceiling")
        wps = next(ceilings)
        return ({"config": name, "error": "exit 1"} if wps is None else
                {"config": name, "train_wps": wps, "eval_wps": 4 * wps})
    monkeypatch.setattr(benchmark, "run_ceiling", run_ceiling)
    args = argparse.Namespace(rounds=3, ceiling=True)
    (result,), (peer,), ceiling = benchmark._measure_rounds(args, "small", [mode], ["torch"])
    assert calls == ["torch", "fused+xla", "ceiling"] * 3
    assert ceiling["train_wps"] == 900.0 and ceiling["rounds_train_wps"] == [1000.0, 800.0]
    assert result["of_ceiling"] == pytest.approx({"train_wps": 500 / 900, "eval_wps": 1000 / 3600})
    assert peer["train_wps"] == 200.0 and result["train_wps"] == 500.0  # medians
    assert result["eval_wps"] == 1000.0 and result["peak_rss_mb"] == 900
    assert result["ratio_to_fastest_peer"] == pytest.approx(2.5)
    assert result["rounds_ratio_to_fastest_peer"] == pytest.approx([1.5, 2.0, 2.5])
    assert ("2.50x (torch) rounds 1.50x 2.00x 2.50x | 56% / 28% |"
            in benchmark.throughput_table([result], [peer]))


def test_a_failed_round_fails_the_result(benchmark):
    good = {"config": "small", "mode": "fused", "train_wps": 5.0, "peak_rss_mb": 1}
    bad = {"config": "small", "mode": "fused", "train_wps": None, "error": "boom"}
    assert benchmark.combine_rounds([good, bad, good]) is bad
    note = {"peer": "torch", "config": "small", "note": "failed: x"}
    assert benchmark.combine_rounds([note]) is note


# -------------------- ceiling

@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_step_products_count_every_flop_of_a_training_step(benchmark, name):
    # Per trained word, two products of 4H x H per layer forward (input and recurrent),
    # four backward (recurrent, and the kernel gradient's [2H] rows twice) plus the
    # input gradient, i.e. 48 L H^2; the softmax 2HV forward and 4HV backward.
    config = configs.get_config(name)
    h, v, layers = config.hidden_size, config.vocab_size, config.num_layers
    words = config.batch_size * config.num_steps
    products = benchmark.step_products(config)
    assert sum(p.flops for p in products) == words * (48 * layers * h * h + 6 * h * v)
    assert sum(p.flops for p in products if p.in_eval) == words * (16 * layers * h * h + 2 * h * v)


def test_ceiling_is_words_per_step_over_the_summed_product_seconds(benchmark):
    config = configs.SMALL
    products = benchmark.step_products(config)
    seconds = [0.001 * (i + 1) for i in range(len(products))]
    train, evaluation = benchmark.ceiling(config, seconds)
    words = config.batch_size * config.num_steps
    assert train == pytest.approx(words / sum(p.count * s for p, s in zip(products, seconds)))
    assert evaluation == pytest.approx(
        words / sum(p.count * s for p, s in zip(products, seconds) if p.in_eval))
    assert evaluation > train


@pytest.mark.parametrize("k, n", [(4, 2), (2, 4)])
def test_product_function_chains_the_product(benchmark, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal([3, k]).astype(np.float32)
    w = rng.standard_normal([k, n]).astype(np.float32)

    def per_step(x):  # the next input: tanh of every column, tiled or block-summed to k
        out = x @ w
        return np.tanh(np.tile(out, [1, k // n]) if n < k else out.reshape(3, n // k, k).sum(1))

    def other(x):  # the next input: waits for the output's corner only
        return x + (x @ w)[0, 0]

    for serial, step in ((True, per_step), (False, other)):
        product = benchmark.Product("p", 3, k, n, 1, True, serial)
        for transposed, w_in in ((False, w), (True, w.T.copy())):
            run = benchmark._product_function(product, transposed, 2)
            np.testing.assert_allclose(run(a, w_in).numpy(), step(step(a)), rtol=1e-5)


def test_ceiling_command_reports_each_product_and_json_last(benchmark, capsys):
    assert benchmark.main(["ceiling", "--configs=test", "--min_seconds=0.01", "--sweeps=2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    (result,) = summary["results"]
    assert result["config"] == "test" and lines[0].startswith("test: ceiling ")
    assert result["eval_wps"] > result["train_wps"] > 0
    assert [row["product"] for row in result["products"]] == [
        p.name for p in benchmark.step_products(configs.TEST)]
    assert all(row["gflops"] > 0 for row in result["products"])


def test_ceiling_rejects_bad_min_seconds_and_sweeps(benchmark, capsys):
    assert benchmark.main(["ceiling", "--configs=test", "--min_seconds=0"]) == 2
    assert capsys.readouterr().err.startswith("error: --min_seconds must be > 0")
    assert benchmark.main(["ceiling", "--configs=test", "--sweeps=0"]) == 2
    assert "--sweeps >= 1" in capsys.readouterr().err
