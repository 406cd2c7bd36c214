"""Tests of scripts/plot_runs.py's reading of runs (the drawing needs matplotlib, an extra)."""

import json
import subprocess
import sys

import pytest

from helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
import plot_runs  # noqa: E402


def _metrics(seconds, valid, test=None):
    epochs = [{"epoch": k + 1, "train_seconds": s, "valid_perplexity": v}
              for k, (s, v) in enumerate(zip(seconds, valid))]
    return {"epochs": epochs, **({"test_perplexity": test} if test else {})}


def test_curve_is_cumulative_minutes_against_valid_perplexity():
    points = plot_runs.curve(_metrics([60, 120, 30], [200.0, 150.0, 140.0]))
    assert points == [(1.0, 200.0), (3.0, 150.0), (3.5, 140.0)]


def test_table_counts_minutes_and_a_partial_last_epoch(tmp_path, capsys):
    # Two full epochs and 40% of a third, stopped by --max_minutes: 3.4 minutes, 2.4 epochs.
    metrics = _metrics([60, 120, 24], [200.0, 150.0, 140.0], test=135.5)
    metrics["epochs"][-1]["fraction"] = 0.4
    metrics["parameters"] = 1234567
    run = tmp_path / "hour"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert plot_runs.main([str(run), "--table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| hour | 1,234,567 | 3.4 | 2.40 | 140.00 | 135.50 |"
    # A run without the parameter count (written before it was recorded) or a test yet.
    assert plot_runs.table([("old", _metrics([60], [120.0]))]).splitlines()[2] == (
        "| old | – | 1.0 | 1.00 | 120.00 | – |")


def test_read_run_takes_a_save_path_a_file_or_a_label(tmp_path):
    run = tmp_path / "small"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics([60], [120.0], test=115.0)))
    assert plot_runs.read_run(str(run))[0] == "small"
    assert plot_runs.read_run(str(run / "metrics.json"))[0] == "small"
    label, metrics = plot_runs.read_run(f"tutorial small={run}")
    assert label == "tutorial small" and metrics["test_perplexity"] == 115.0


def test_read_run_takes_an_existing_path_with_an_equals_sign_as_a_path(tmp_path):
    run = tmp_path / "lr=0.5"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics([60], [120.0])))
    assert plot_runs.read_run(str(run))[0] == "lr=0.5"
    assert plot_runs.read_run(f"half={run}")[0] == "half"


@pytest.mark.parametrize("metrics, problem", [
    ({"config": {}}, "no list of epochs"),
    ([], "no list of epochs"),
    ({"epochs": [3]}, "epoch entry 1 is not an object"),
    ({"epochs": [{"valid_perplexity": 120.0}]}, "epoch entry 1 has no number train_seconds"),
    ({"epochs": [{"train_seconds": 60, "valid_perplexity": "x"}]},
     "epoch entry 1 has no number valid_perplexity"),
])
def test_a_damaged_metrics_file_is_one_error_line(tmp_path, metrics, problem):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit, match=rf"^error: .*metrics.json is not a run's metrics.json "
                                         rf"\({problem}\); pass the save_path"):
        plot_runs.main([str(tmp_path), "--table"])
    # A diverged epoch's perplexity is written as null: a run, not damage.
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"epochs": [{"train_seconds": 60, "valid_perplexity": None}]}))
    assert plot_runs.main([str(tmp_path), "--table"]) == 0


def test_plot_runs_unreadable_run_is_one_error_line(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_runs.py"),
                             str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: cannot read ")
    assert "Traceback" not in result.stderr


def test_plot_runs_writes_a_png(tmp_path):
    # matplotlib is in requirements-dev.txt (through requirements-plot.txt): this runs in CI.
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics([60, 60], [150.0, 120.0], 118.0)))
    plot_runs.main([str(run), f"--out={tmp_path / 'c.png'}"])
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_runs_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(_metrics([60], [150.0])))
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    with pytest.raises(SystemExit, match=r"^error: this script needs matplotlib: "
                                         r"\.venv/bin/pip install -r requirements-plot.txt$"):
        plot_runs.main([str(run), f"--out={tmp_path / 'c.png'}"])
    assert not (tmp_path / "c.png").exists()
