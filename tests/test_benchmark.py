"""Tests of scripts/benchmark.py, the benchmarks' command line: each command end to end, its
JSON last line and tables, one-line errors, and the child processes' command lines."""

import dataclasses
import json
import subprocess
import sys

import pytest

import configs
import reader
from benchmarks import ceiling, common, measure, perplexity
from helpers import REPO, TINY_TEXT

SCRIPT = REPO / "scripts" / "benchmark.py"


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
    assert result["error"] is None
    for key in ("train_wps", "eval_wps", "peak_rss_mb", "stream_eval_seconds"):
        assert result[key] > 0, key
    assert summary["tf_version"] and summary["host"]["cpu_cores"] >= 1
    assert "cpu_vector_isa" in summary["host"]
    assert isinstance(summary["host"]["isa_caps"], dict)


def test_isa_caps_records_the_libraries_caps_set_in_the_environment():
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "",
               "XLA_FLAGS": "--xla_cpu_max_isa=avx2 --xla_cpu_use_xnnpack=false", "HOME": "/"}
    assert common.isa_caps(environ) == {"ONEDNN_MAX_CPU_ISA": "AVX2", "xla_cpu_max_isa": "AVX2"}
    assert common.isa_caps({"XLA_FLAGS": "--xla_cpu_use_xnnpack=false"}) == {}


def test_throughput_missing_data_fails_in_one_line(benchmark, tmp_path, capsys):
    code = benchmark.main(["throughput", f"--data_path={tmp_path / 'nowhere'}"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: no PTB data at --data_path=")


def test_measure_refuses_xla_for_a_kernel_without_one(benchmark, tiny_corpus):
    # The child's one error line, which the parent shows in the mode's FAILED line.
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["_measure", "--config=test", "--rnn_mode=block", "--xla=1",
                        "--warmup=1", "--steps=1", "--eval_steps=1",
                        f"--data_path={tiny_corpus}"])
    assert str(exit_info.value).startswith("error: --rnn_mode=block cannot run under --xla")


def test_measure_refuses_bfloat16_without_xla(benchmark, tiny_corpus):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["_measure", "--config=test", "--rnn_mode=fused", "--xla=0",
                        "--precision=bfloat16", "--warmup=1", "--steps=1", "--eval_steps=1",
                        f"--data_path={tiny_corpus}"])
    assert str(exit_info.value).startswith("error: --precision=bfloat16 compiles fused mode's")


def test_measure_times_a_bfloat16_mode(benchmark, tiny_corpus, capsys):
    assert benchmark.main(["_measure", "--config=test", "--rnn_mode=fused", "--xla=1",
                           "--precision=bfloat16", "--warmup=1", "--steps=2", "--eval_steps=2",
                           "--override=batch_size=2", f"--data_path={tiny_corpus}"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert result["mode"] == "fused+xla+bfloat16" and result["train_wps"] > 0


def test_throughput_passes_the_precision_to_the_child(benchmark, tiny_corpus, capsys):
    commands = _dry_run_commands(benchmark, capsys, [
        "throughput", f"--data_path={tiny_corpus}", "--configs=test",
        "--rnn_modes=fused+xla,fused+xla+bfloat16"])
    assert commands["test fused+xla"].precision == "float32"
    assert commands["test fused+xla+bfloat16"].precision == "bfloat16"


def _dry_run_commands(benchmark, capsys, argv):
    """{label: the parsed flags of its child command} from a --dry_run's lines."""
    assert benchmark.main([*argv, "--dry_run"]) == 0
    commands = {}
    for line in capsys.readouterr().out.splitlines():
        label, _, command = line.partition(": ")
        words = command.split()
        if str(SCRIPT) in words:
            commands[label] = benchmark.build_parser().parse_args(
                words[words.index(str(SCRIPT)) + 1:])
    return commands


def test_throughput_ceiling_is_measured_for_the_modes_config(benchmark, make_corpus, capsys):
    # The fraction "of ceiling" compares a mode with the ceiling of the same model:
    # overrides applied, and the vocabulary the modes take from the data.
    data = make_corpus(train=TINY_TEXT * 20)
    commands = _dry_run_commands(benchmark, capsys, [
        "throughput", f"--data_path={data}", "--configs=test", "--rnn_modes=fused+xla",
        "--ceiling", "--override=hidden_size=8", "--override=num_steps=3"])
    mode, ceiling_run = commands["test fused+xla"], commands["test ceiling"]
    vocab_size = reader.load_corpus(str(data)).vocab_size
    modes_config = measure.resolve_config(mode.config, mode.override, vocab_size)
    assert ceiling_run.configs == "test"
    assert ceiling.resolve_config(ceiling_run.configs, ceiling_run.override) == modes_config
    assert (modes_config.hidden_size, modes_config.num_steps) == (8, 3)


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


@pytest.mark.parametrize("text", ['{"config": {"hidden', '{"epochs": []}', '[1, 2]',
                                  '{"config": {"hidden_size": "big"}, "epochs": []}'])
def test_perplexity_leaves_an_unreadable_metrics_json_out_in_one_line(
        benchmark, make_corpus, tmp_path, capsys, text):
    (tmp_path / "runs" / "test").mkdir(parents=True)
    (tmp_path / "runs" / "test" / "metrics.json").write_text(text)
    code = benchmark.main(["perplexity", f"--data_path={make_corpus()}", "--configs=test",
                           f"--root={tmp_path / 'runs'}", "--collect_only"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("test: ") and "is not a run's metrics.json" in err
    assert err.strip().endswith("; not in the table") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, own", [("--save_path=/tmp/elsewhere", "--root"),
                                       ("--model=medium", "--configs")])
def test_perplexity_refuses_a_passed_on_flag_it_sets_itself(benchmark, make_corpus, tmp_path,
                                                            capsys, flag, own):
    # The driver's last --save_path won: it trained elsewhere, and the table showed the
    # numbers already in --root (another run's), with exit 0.
    code = benchmark.main(["perplexity", f"--data_path={make_corpus()}", "--configs=test",
                           f"--root={tmp_path / 'runs'}", flag])
    assert code == 2 and not (tmp_path / "runs").exists()
    assert capsys.readouterr().err.strip() == (f"error: {flag} is this tool's to set (each run "
                                               f"gets --{flag[2:].partition('=')[0]} from {own}); "
                                               f"pass {own} instead")


def test_perplexity_output_that_cannot_be_written_fails_before_any_training(
        benchmark, make_corpus, tmp_path, capsys):
    code = benchmark.main(["perplexity", f"--data_path={make_corpus()}", "--configs=test",
                           f"--root={tmp_path / 'runs'}", f"--output={tmp_path / 'no' / 'x.md'}"])
    assert code == 2 and not (tmp_path / "runs").exists()
    assert capsys.readouterr().err.startswith("error: --output=")


def test_throughput_refuses_no_warmup(benchmark, make_corpus, capsys):
    # Without a warm-up step the timed steps would include tracing and compiling.
    assert benchmark.main(["throughput", f"--data_path={make_corpus()}", "--warmup=0"]) == 2
    assert "--warmup must be >= 1" in capsys.readouterr().err


def test_a_child_killed_by_a_signal_says_so_and_log_lines_are_no_reason():
    killed = common.ChildRun(-9, "", "E0000 00:00:1 cuda_platform.cc:52] failed call to cuInit", 0)
    assert common.child_failure(killed) == "killed by SIGKILL (out of memory?)"
    chatty = common.ChildRun(1, "", "error: bad\nW0000 00:00:1 x.cc:1] noise\n", 0)
    assert common.child_failure(chatty) == "exit 1: error: bad"
    fatal = common.ChildRun(134, "", "F0000 00:00:1 x.cc:1] Check failed: y\n", 0)
    assert common.child_failure(fatal) == "exit 134: F0000 00:00:1 x.cc:1] Check failed: y"


def test_perplexity_counts_an_epoch_stopped_by_the_budget_as_its_fraction(make_corpus, tmp_path):
    data = make_corpus(train=TINY_TEXT * 20)  # 540 words an epoch at 4 x 5, as above
    config = dataclasses.replace(configs.TEST, batch_size=4, num_steps=5, max_max_epoch=2)
    epochs = [{"epoch": 1, "learning_rate": 1.0, "train_perplexity": 60.0,
               "valid_perplexity": 50.0, "train_seconds": 2.0},
              {"epoch": 2, "learning_rate": 0.5, "train_perplexity": 40.0,
               "valid_perplexity": 45.5, "train_seconds": 0.7, "fraction": 0.25}]
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"config": configs.to_dict(config), "epochs": epochs}))
    corpus = reader.load_corpus(str(data))
    row = perplexity.collect_run("test", str(tmp_path), corpus)
    assert row.train_wps == pytest.approx(1.25 * 540 / 2.7)
    # A run that wrote its text's hash is held to it: another text's words/s would be wrong.
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for data_hash in (corpus.data_hash, "0" * 64):
        (tmp_path / "metrics.json").write_text(json.dumps(dict(metrics, data_hash=data_hash)))
        if data_hash == corpus.data_hash:
            assert perplexity.collect_run("test", str(tmp_path), corpus) == row
            continue
        with pytest.raises(common.BenchmarkError, match=r"metrics\.json is of a run on other text "
                                                        r"than --data_path's"):
            perplexity.collect_run("test", str(tmp_path), corpus)


def test_ceiling_command_reports_each_product_and_json_last(benchmark, capsys):
    assert benchmark.main(["ceiling", "--configs=test", "--min_seconds=0.01", "--sweeps=2",
                           "--sgemm_n=64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    (result,) = summary["results"]
    assert lines[0].startswith("machine: sgemm 64^3 ") and lines[1].startswith("test ceiling: train ")
    assert result["eval_wps"] > result["train_wps"] > 0 and result["error"] is None
    # The best kernel of each product is at least as fast as XLA's, so its ceiling is too.
    assert result["train_wps"] >= result["xla_train_wps"] > 0
    assert result["eval_wps"] >= result["xla_eval_wps"] > 0
    assert [row["product"] for row in result["products"]] == [
        p.name for p in ceiling.step_products(configs.TEST)]
    labels = {ceiling.variant_label(*v) for v in ceiling.VARIANTS}
    serial = {ceiling.variant_label(*v) for v in ceiling.SERIAL_VARIANTS}
    assert labels == {"xla", "xla wT", "tf", "tf wT"} and serial == {"xla T"}
    bf16 = ceiling.variant_label(*ceiling.BF16)
    for row, product in zip(result["products"], ceiling.step_products(configs.TEST)):
        # bfloat16 for the products over all time steps, as --precision=bfloat16 runs them;
        # the transposed product for the per-step ones, as a transposed loop runs them
        assert set(row["gflops_by_variant"]) == labels | (serial if product.serial else {bf16})
        float32 = {k: v for k, v in row["gflops_by_variant"].items() if k != bf16}
        assert row["gflops"] == max(float32.values())
        assert row["gflops_by_variant"][row["fastest"]] == row["gflops"]
    # Products on bfloat16 where faster only raise the training ceiling.
    assert result["bfloat16_train_wps"] >= result["train_wps"]
    assert result["bfloat16_train_wps_with_loss"] >= result["train_wps_with_loss"]
    assert result["machine"]["sgemm_n"] == 64 and result["machine"]["sgemm_gflops"] > 0
    # The loss's passes, timed on every variant, only lower the ceiling.
    loss = result["loss"]
    assert set(loss["ms_by_variant"]) == {"xla", "tf", "xla stock", "tf stock"}
    assert loss["forward_ms"] == min(f for f, _ in loss["ms_by_variant"].values())
    assert loss["train_ms"] == min(t for _, t in loss["ms_by_variant"].values())
    # Each ceiling with the loss adds its pass to the same step: forward to eval's,
    # forward with the gradient to training's.
    words = configs.TEST.batch_size * configs.TEST.num_steps
    assert words / result["train_wps_with_loss"] - words / result["train_wps"] == (
        pytest.approx(loss["train_ms"] / 1e3, rel=1e-6, abs=1e-9))
    assert words / result["eval_wps_with_loss"] - words / result["eval_wps"] == (
        pytest.approx(loss["forward_ms"] / 1e3, rel=1e-6, abs=1e-9))
    assert any(line.startswith("  softmax loss's passes over ") for line in lines)


def test_ceiling_command_applies_overrides(benchmark, capsys):
    assert benchmark.main(["ceiling", "--configs=test", "--override=hidden_size=8",
                           "--override=vocab_size=50", "--min_seconds=0.001", "--sweeps=1",
                           "--sgemm_n=0"]) == 0
    (result,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["results"]
    shapes = {row["product"]: row["shape"] for row in result["products"]}
    # The test config's 20 x 2 batch: 40 words a step, hidden 8 (4 gates: 32), 50 words.
    assert shapes["LSTM input projection"] == [40, 8, 32]
    assert shapes["softmax"] == [40, 8, 50]


def test_ceiling_rejects_bad_min_seconds_and_sweeps(benchmark, capsys):
    for bad in ("0", "inf", "nan"):  # inf timed forever
        assert benchmark.main(["ceiling", "--configs=test", f"--min_seconds={bad}"]) == 2
        assert capsys.readouterr().err.startswith("error: --min_seconds must be finite and > 0")
    assert benchmark.main(["ceiling", "--configs=test", "--sweeps=0"]) == 2
    assert "--sweeps >= 1" in capsys.readouterr().err
    assert benchmark.main(["ceiling", "--configs=test", "--sgemm_n=-1"]) == 2
    assert "--sgemm_n >= 0" in capsys.readouterr().err
