"""Tests of distribute.py: data-parallel training equals one device; checkpoints move between
N; signals, a killed worker and every bad input end in one line.

Logical CPU devices must be configured before TensorFlow starts its devices,
which pytest's process did long ago: the mirrored test runs in a fresh Python
process. Multi-worker tests run the driver as worker processes on loopback ports.
"""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import configs
import distribute
import reader
import run
from helpers import REPO, assert_user_error, grammar_text, run_driver, tree_digest

_PERPLEXITY_LINE = re.compile(r"^(Epoch: \d+ (?:Train|Valid) Perplexity|Test Perplexity): "
                              r"([\d.]+)$", re.M)


def _perplexities(text):
    """{"Epoch: 1 Train Perplexity": "6.353", ...} to 4 significant digits."""
    return {name: f"{float(value):.4g}" for name, value in _PERPLEXITY_LINE.findall(text)}


def _train_text(num_ids):
    """Grammar lines holding num_ids - 3 .. num_ids word ids (with each line's <eos>)."""
    lines, count = [], 0
    for line in grammar_text(400).splitlines(keepends=True):
        if count + len(line.split()) + 1 > num_ids:
            break
        lines.append(line)
        count += len(line.split()) + 1
    return "".join(lines)


# -------------------- options, TF_CONFIG, sharding: in-process, nothing started

@pytest.mark.parametrize("text, message", [
    ("{not json", r"TF_CONFIG is not valid JSON"),
    ('["a"]', r"TF_CONFIG has no \"cluster\" object"),
    ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}',
     r"no non-empty \"worker\" list"),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
     r"worker address 'localhost' is not host:port"),
    ('{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
     r"lists a worker address twice"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}',
     r"job\(s\) ps: only a \"worker\" job"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "chief", "index": 0}}',
     r"needs \"task\": \{\"type\": \"worker\""),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": "1"}}',
     r"task index '1' is not an integer"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
     r"task index 2 is out of range: the cluster has 2 worker\(s\), indices 0\.\.1"),
])
def test_parse_tf_config_refuses_malformed_in_one_line(text, message):
    with pytest.raises(distribute.DistributeError, match=message) as info:
        distribute.parse_tf_config(text)
    assert "\n" not in str(info.value)


def test_parse_tf_config_reads_workers_and_index():
    cluster = distribute.parse_tf_config(
        '{"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 1}}')
    assert cluster.workers == ("h0:2222", "h1:2222") and cluster.index == 1


def test_resolve_auto_picks_multi_worker_only_with_tf_config():
    assert distribute.resolve("auto", {}) == "none"
    assert distribute.resolve("auto", {"TF_CONFIG": "{}"}) == "multi_worker"
    assert distribute.resolve("mirrored", {"TF_CONFIG": "{}"}) == "mirrored"


def test_rows_split_the_batch_in_order():
    replicas = distribute.Replicas()
    replicas.num_replicas = 4
    assert [replicas.rows(r, 20) for r in range(4)] == [(0, 5), (5, 10), (10, 15), (15, 20)]


@pytest.mark.parametrize("changes, message", [
    (dict(strategy="ring"), r"strategy must be one of auto, none, mirrored, multi_worker"),
    (dict(strategy="none", num_cpu_replicas=2), r"num_cpu_replicas=2 needs strategy mirrored"),
    (dict(strategy="mirrored", num_cpu_replicas=-1), r"num_cpu_replicas must be an integer >= 0"),
    (dict(collective_timeout_seconds=0), r"collective_timeout_seconds must be > 0"),
    (dict(connect_timeout_seconds=-5), r"connect_timeout_seconds must be > 0"),
])
def test_run_options_refuse_bad_strategy_fields(changes, message):
    with pytest.raises(run.RunError, match=message):
        run.RunOptions(**changes)


@pytest.fixture
def corpus(make_corpus):
    return reader.load_corpus(str(make_corpus(grammar_text(200), grammar_text(40, seed=1),
                                              grammar_text(40, seed=2))))


def _config(corpus, **changes):
    fields = dict(batch_size=4, num_steps=5, hidden_size=16, vocab_size=corpus.vocab_size)
    return dataclasses.replace(configs.TEST, **{**fields, **changes})


_WORKERS_2 = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": ' \
             '{"type": "worker", "index": %d}}'


@pytest.mark.parametrize("env, changes, message", [
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', {},
     r"task index 3 is out of range"),
    ("{oops", {}, r"TF_CONFIG is not valid JSON"),
    (None, {}, r"strategy multi_worker needs TF_CONFIG"),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}, "task": '
     '{"type": "worker", "index": 0}}', {}, r"batch_size 4 is not divisible by the 3 replicas"),
])
def test_run_refuses_bad_cluster_before_writing_anything(corpus, tmp_path, monkeypatch, env,
                                                          changes, message):
    if env is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", env)
    save = tmp_path / "run"
    with pytest.raises(distribute.DistributeError, match=message):
        run.train_and_evaluate(_config(corpus, **changes), corpus, str(save),
                               run.RunOptions(strategy="multi_worker", rnn_mode="basic",
                                              xla=False))
    assert tree_digest(save) is None


def test_run_refuses_mirrored_without_gpu_or_cpu_replicas(corpus, tmp_path):
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(distribute.DistributeError, match=r"mirrored found no GPU"):
        run.train_and_evaluate(_config(corpus), corpus, str(tmp_path / "run"),
                               run.RunOptions(strategy="mirrored"))
    assert tree_digest(tmp_path / "run") is None


def test_driver_refuses_index_out_of_range_in_one_line(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", _WORKERS_2 % 2)  # run_driver passes the environment on
    result = run_driver("--model=test", f"--data_path={tiny_corpus}",
                        f"--save_path={tmp_path / 'run'}")
    assert_user_error(result, r"^error: TF_CONFIG task index 2 is out of range")
    assert tree_digest(tmp_path / "run") is None


# -------------------- mirrored on 2 logical CPUs against one device (a fresh process)

_MIRRORED_VS_ONE = r"""
import dataclasses, json, sys
import numpy as np
import tensorflow as tf
import checkpoints, configs, reader, run
data, out = sys.argv[1], sys.argv[2]
corpus = reader.load_corpus(data)
config = dataclasses.replace(configs.TEST, batch_size=4, num_steps=5, hidden_size=16,
                             num_layers=2, keep_prob=0.5, max_grad_norm=1.0, max_max_epoch=1,
                             vocab_size=corpus.vocab_size)
result = {}
# mirrored first: its logical CPUs must precede TensorFlow's start. Default fused + XLA.
for strategy in ("mirrored", "none"):
    save = f"{out}/{strategy}"
    metrics = run.train_and_evaluate(config, corpus, save, run.RunOptions(
        strategy=strategy, num_cpu_replicas=2 if strategy == "mirrored" else 0))
    snapshot = tf.train.load_checkpoint(checkpoints.newest(save))
    result[strategy] = {"metrics": metrics, "steps": int(snapshot.get_tensor(
        "state/global_step/.ATTRIBUTES/VARIABLE_VALUE")), "tensors": {
        key: snapshot.get_tensor(key).tolist() for key in snapshot.get_variable_to_shape_map()
        if "/model/" in key or "carried" in key}}
print(json.dumps(result))
"""


def test_mirrored_two_cpus_trains_as_one_device(make_corpus, tmp_path):
    import numpy as np
    data = make_corpus(_train_text(620), grammar_text(40, seed=1), grammar_text(40, seed=2))
    assert reader.ptb_producer(reader.load_corpus(str(data)).train, 4, 5).epoch_size == 30
    out = subprocess.run([sys.executable, "-c", _MIRRORED_VS_ONE, str(data), str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "strategy: mirrored (2 replicas)  rows per replica: 2 of 4" in out.stdout
    result = json.loads(out.stdout.strip().splitlines()[-1])
    mirrored, one = result["mirrored"], result["none"]
    assert mirrored["steps"] == one["steps"] == 30
    assert set(mirrored["tensors"]) == set(one["tensors"]) and len(one["tensors"]) >= 8
    for key, expected in one["tensors"].items():
        expected, got = np.asarray(expected), np.asarray(mirrored["tensors"][key])
        assert np.abs(got - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1e-30), key
    for field in ("train_perplexity", "valid_perplexity"):
        a, b = mirrored["metrics"]["epochs"][0][field], one["metrics"]["epochs"][0][field]
        assert f"{a:.4g}" == f"{b:.4g}", field
    assert f"{mirrored['metrics']['test_perplexity']:.4g}" == \
        f"{one['metrics']['test_perplexity']:.4g}"
