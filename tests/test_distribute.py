"""Tests of distribute.py: data-parallel training equals one device; checkpoints move between
N; signals, a killed worker and every bad input end in one line.

Logical CPU devices must be configured before TensorFlow starts its devices,
which pytest's process did long ago: the mirrored test runs in a fresh Python
process. Multi-worker tests run the driver as worker processes on loopback ports.
"""

import contextlib
import dataclasses
import glob
import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
import tensorflow as tf

import configs
import distribute
import reader
import run
from helpers import (REPO, assert_exit_error, assert_user_error, driver_exit_in_process,
                     grammar_text, run_driver, tree_digest)

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
    # gRPC took these for addresses only to fail later: a traceback, or the connect timeout.
    ('{"cluster": {"worker": ["grpc://127.0.0.1:2222"]}, "task": {"type": "worker", "index": 0}}',
     r"worker address 'grpc://127.0.0.1:2222' is not host:port \(a host name, an IPv4 address or "
     r"a bracketed IPv6 one, and no scheme such as grpc://\)"),
    ('{"cluster": {"worker": ["127.0.0.1:2222:1"]}, "task": {"type": "worker", "index": 0}}',
     r"worker address '127.0.0.1:2222:1' is not host:port"),
    ('{"cluster": {"worker": ["::1:2222"]}, "task": {"type": "worker", "index": 0}}',
     r"worker address '::1:2222' is not host:port"),
    ('{"cluster": {"worker": ["h 0:2222"]}, "task": {"type": "worker", "index": 0}}',
     r"worker address 'h 0:2222' is not host:port"),
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
        '{"cluster": {"worker": ["h0:2222", "h1.example.org:2222", "[::1]:2222", '
        '"10.0.0.7:2222"]}, "task": {"type": "worker", "index": 1}}')
    assert cluster.workers == ("h0:2222", "h1.example.org:2222", "[::1]:2222", "10.0.0.7:2222")
    assert cluster.index == 1


def test_an_own_address_that_does_not_resolve_fails_before_joining():
    # Its server could not start: the join waited out the connect timeout, then was killed.
    config = ('{"cluster": {"worker": ["nosuchhost.invalid:2222", "127.0.0.1:2223"]}, '
              '"task": {"type": "worker", "index": 0}}')
    with pytest.raises(distribute.DistributeError, match=r"^worker 0's own address "
                                                         r"nosuchhost\.invalid:2222 does not "
                                                         r"resolve on this machine \(.*\); fix "
                                                         r"TF_CONFIG's task index or addresses$"):
        distribute.create("multi_worker", 20, environ={"TF_CONFIG": config})


def _watchdog_says(index, *workers):
    """What the join's watchdog prints when its 0.5 s run out, and that it killed the joiner."""
    joiner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watchdog = subprocess.Popen(  # its stdin open: the joiner has not joined
        [sys.executable, "-c", distribute._WATCHDOG, str(joiner.pid), "0.5", str(index),
         *workers], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert joiner.wait(timeout=30) == -signal.SIGKILL
        return watchdog.stderr.read().strip()
    finally:
        joiner.kill()
        watchdog.stdin.close()
        watchdog.wait(timeout=30)


def test_the_joins_watchdog_names_reachable_ipv6_peers_and_a_lone_worker():
    with socket.socket(socket.AF_INET6) as listening:  # a peer that answers, not joining
        listening.bind(("::1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert _watchdog_says(0, "127.0.0.1:1", f"[::1]:{port}") == (
            f"error: worker 0 waited 0.5 s for the cluster: worker 1 at [::1]:{port} reachable "
            f"but did not join; start every worker (same TF_CONFIG cluster) or fix the addresses")
    assert _watchdog_says(0, "127.0.0.1:1") == (
        "error: worker 0 waited 0.5 s for the cluster: its own server at 127.0.0.1:1 did not "
        "start; start every worker (same TF_CONFIG cluster) or fix the addresses")


def test_a_worker_gone_after_the_chiefs_test_is_a_warning_for_the_chief(capsys):
    # The chief's run is complete (metrics.json has its test): not an error, exit 0.
    def gone(*args, **kwargs):
        raise tf.errors.UnavailableError(None, None, "tasks are unhealthy (stopped sending "
                                                     "heartbeats): /job:worker/replica:0/task:1")

    strategy = types.SimpleNamespace(num_replicas_in_sync=2,
                                     experimental_distribute_values_from_function=lambda f: None,
                                     extended=types.SimpleNamespace(reduce_to=gone))
    chief = distribute.Replicas(strategy, distribute.Cluster(["h0:1", "h1:1"], 0))
    chief.release_workers()
    assert capsys.readouterr().err == ("warning: after the test, lost worker 1 (h1:1); the run "
                                       "is complete (its test perplexity is recorded)\n")
    waiting = distribute.Replicas(strategy, distribute.Cluster(["h0:1", "h1:1"], 1))
    with pytest.raises(distribute.DistributeError, match=r"^lost contact with another worker"):
        with waiting.lost_peers_as_errors():
            waiting.wait_for_chief()


def test_resolve_auto_picks_multi_worker_only_with_tf_config():
    assert distribute.resolve("auto", {}) == "none"
    assert distribute.resolve("auto", {"TF_CONFIG": "{}"}) == "multi_worker"
    assert distribute.resolve("mirrored", {"TF_CONFIG": "{}"}) == "mirrored"


def test_is_chief_is_known_from_tf_config_before_joining():
    worker = '{"cluster": {"worker": ["h0:1", "h1:1"]}, "task": {"type": "worker", "index": %d}}'
    assert distribute.is_chief("auto", {}) and distribute.is_chief("multi_worker", {})
    assert distribute.is_chief("auto", {"TF_CONFIG": worker % 0})
    assert not distribute.is_chief("auto", {"TF_CONFIG": worker % 1})
    assert distribute.is_chief("none", {"TF_CONFIG": worker % 1})


def test_a_non_chief_is_not_refused_over_an_export_dir_only_the_chief_writes(
        tmp_path, monkeypatch, capsys):
    # Worker 1 was refused ("export_dir ... is a file"), and worker 0 waited out the join.
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("TF_CONFIG", _WORKERS_2 % 1)
    code = driver_exit_in_process("--model=test", f"--data_path={tmp_path / 'nowhere'}",
                                  f"--save_path={tmp_path / 'run'}",
                                  f"--export_dir={tmp_path / 'a_file'}")
    assert_exit_error(code, r"nowhere")  # the next check's: the data, not the export
    assert "this worker ignores it" in capsys.readouterr().err


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
    (dict(connect_timeout_seconds=float("inf")), r"connect_timeout_seconds must be > 0 and at "
                                                 r"most 86400 \(a day\), got inf"),
    (dict(collective_timeout_seconds=1e10), r"collective_timeout_seconds must be > 0 and at most"),
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
data, out, variants = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
corpus = reader.load_corpus(data)
result = {}
for name, changes in variants.items():
    config = dataclasses.replace(configs.TEST, batch_size=4, num_steps=5, hidden_size=16,
                                 num_layers=2, keep_prob=0.5, max_grad_norm=1.0,
                                 max_max_epoch=1, vocab_size=corpus.vocab_size, **changes)
    # mirrored first: its logical CPUs must precede TensorFlow's start. Default kernel, XLA.
    for strategy in ("mirrored", "none"):
        save = f"{out}/{name}/{strategy}"
        metrics = run.train_and_evaluate(config, corpus, save, run.RunOptions(
            strategy=strategy, num_cpu_replicas=2 if strategy == "mirrored" else 0))
        snapshot = tf.train.load_checkpoint(checkpoints.newest(save))
        result.setdefault(name, {})[strategy] = {
            "metrics": metrics,
            "steps": int(snapshot.get_tensor("state/global_step/.ATTRIBUTES/VARIABLE_VALUE")),
            "tensors": {key: snapshot.get_tensor(key).tolist()
                        for key in snapshot.get_variable_to_shape_map()
                        if "/model/" in key or "carried" in key}}
print(json.dumps(result))
"""
# The tutorial's dropout; and the masks beyond it (per row: variational, recurrent; per
# batch: weight drop, embedding dropout) with tied embeddings.
_VARIANTS = {"tutorial": {},
             "beyond": {"variational_dropout": True, "recurrent_keep_prob": 0.7,
                        "embedding_dropout": 0.8, "weight_drop": 0.6, "tie_embeddings": True}}


def test_mirrored_two_cpus_trains_as_one_device(make_corpus, tmp_path):
    import numpy as np
    data = make_corpus(_train_text(620), grammar_text(40, seed=1), grammar_text(40, seed=2))
    assert reader.ptb_producer(reader.load_corpus(str(data)).train, 4, 5).epoch_size == 30
    out = subprocess.run([sys.executable, "-c", _MIRRORED_VS_ONE, str(data), str(tmp_path),
                          json.dumps(_VARIANTS)],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "strategy: mirrored (2 replicas)  rows per replica: 2 of 4" in out.stdout
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for variant in _VARIANTS:
        mirrored, one = result[variant]["mirrored"], result[variant]["none"]
        assert mirrored["steps"] == one["steps"] == 30
        assert set(mirrored["tensors"]) == set(one["tensors"]) and len(one["tensors"]) >= 7
        for key, expected in one["tensors"].items():
            expected, got = np.asarray(expected), np.asarray(mirrored["tensors"][key])
            assert np.abs(got - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1e-30), \
                (variant, key)
        for field in ("train_perplexity", "valid_perplexity"):
            a, b = mirrored["metrics"]["epochs"][0][field], one["metrics"]["epochs"][0][field]
            assert f"{a:.4g}" == f"{b:.4g}", (variant, field)
        assert f"{mirrored['metrics']['test_perplexity']:.4g}" == \
            f"{one['metrics']['test_perplexity']:.4g}", variant


# -------------------- multi_worker: worker processes on loopback ports

def _driver_args(data, save, *extra):
    return ["--model=test", "--override=batch_size=4", "--override=num_steps=5",
            "--override=hidden_size=16", "--override=keep_prob=0.5", "--override=max_epoch=1",
            "--override=max_max_epoch=2", f"--data_path={data}", f"--save_path={save}",
            "--progress=plain", "--collective_timeout_seconds=60",
            "--connect_timeout_seconds=60", *extra]


class _Process:
    """The driver in a child process, its output in files (read while it runs)."""

    def __init__(self, args, log, tf_config=None, new_session=False):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = json.dumps(tf_config)
        self.out, self.err = f"{log}.out", f"{log}.err"
        self.tf_address = (tf_config["cluster"]["worker"][tf_config["task"]["index"]]
                           if tf_config else None)
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, str(REPO / "ptb_word_lm.py"), *args],
                                         cwd=REPO, env=env, stdout=out, stderr=err, text=True,
                                         start_new_session=new_session)

    def stdout(self):
        with open(self.out) as f:
            return f.read()

    def wait(self, timeout=300):
        """(returncode, stdout, stderr) once it ends."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        with open(self.err) as f:
            return self.proc.returncode, self.stdout(), f.read()

    def wait_for(self, pattern, timeout=120):
        deadline = time.time() + timeout
        while not re.search(pattern, self.stdout(), re.M):
            assert self.proc.poll() is None and time.time() < deadline, self.wait(1)
            time.sleep(0.05)


def _workers(args_of, tmp_path, tag):
    """Two worker processes of one cluster; args_of(index) gives each its driver flags."""
    ports = distribute.free_loopback_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [_Process(args_of(i), tmp_path / f"{tag}{i}",
                     {"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(2)]


def _peak_threads(processes):
    """The most threads each process had at once, sampled until all have ended."""
    peak = [0] * len(processes)
    while any(p.proc.poll() is None for p in processes):
        for i, p in enumerate(processes):
            with contextlib.suppress(OSError):  # ended meanwhile
                with open(f"/proc/{p.proc.pid}/status") as status:
                    count = next(int(line.split()[1]) for line in status
                                 if line.startswith("Threads:"))
                peak[i] = max(peak[i], count)
        time.sleep(0.1)
    return peak


@pytest.fixture(scope="module")
def mw_data(tmp_path_factory):
    """A corpus of 60 training steps of 4 x 5, and one process's perplexity lines on it."""
    data = tmp_path_factory.mktemp("mw_data")
    for name, text in (("train", _train_text(4 * 5 * 60 + 4)), ("valid", grammar_text(40, 1)),
                       ("test", grammar_text(40, 2))):
        (data / f"ptb.{name}.txt").write_text(text)
    save = tmp_path_factory.mktemp("mw_reference") / "run"
    code, out, err = _Process(_driver_args(data, save), save).wait()
    assert code == 0, err[-3000:]
    reference = _perplexities(out)
    assert len(reference) == 5, out
    return data, reference


def test_multi_worker_two_processes_train_as_one(mw_data, tmp_path):
    data, reference = mw_data
    # A periodic save due on each epoch's last step: the epoch's end saves, and the wish,
    # agreed a step later, used to come with the next epoch's first step, an extra save.
    workers = _workers(lambda i: _driver_args(data, tmp_path / f"save{i}",
                                              "--checkpoint_every_steps=59",  # epoch_size
                                              "--keep_checkpoints=9"), tmp_path, "w")
    threads = _peak_threads(workers)
    (code0, out0, err0), (code1, out1, err1) = [w.wait() for w in workers]
    assert code0 == 0 and code1 == 0, err0[-2000:] + err1[-2000:]
    # A timeout on each collective was a thread sleeping it out: 35 a step, 4,000 here within
    # the 60 s, and a longer epoch aborted both workers when no more could start.
    assert max(threads) < 500, threads
    assert "strategy: multi_worker (2 workers, this is worker 0)" in out0
    assert _perplexities(out0) == reference
    assert "computed by the chief, worker 0" in out1 and "Test Perplexity" not in out1
    snapshots = [str(p)[:-len(".index")] for p in (tmp_path / "save0").glob("ckpt-*.index")]
    steps = sorted(int(tf.train.load_checkpoint(p).get_tensor(
        "state/global_step/.ATTRIBUTES/VARIABLE_VALUE")) for p in snapshots)
    assert steps == [59, 118]  # one save at each epoch's end, none a step after it
    assert not (tmp_path / "save1").exists()  # a non-chief writes nothing of the run


def test_sigterm_checkpoints_move_between_one_process_and_two_workers(mw_data, tmp_path):
    # One process stopped, resumed on two workers; those stopped by a SIGTERM to the
    # non-chief (the chief stops too), resumed on one process: the run of no stops.
    data, reference = mw_data
    save = tmp_path / "run"
    one = _Process(_driver_args(data, save), tmp_path / "one")
    one.wait_for(r"^0\.\d+ perplexity")
    one.proc.send_signal(signal.SIGTERM)
    code, _, err = one.wait()
    stop = re.search(r"^Stopped at epoch 1 step (\d+)", err, re.M)
    assert code == 1 and stop, err[-2000:]
    first_stop = int(stop.group(1))
    workers = _workers(lambda i: _driver_args(data, save), tmp_path, "w")
    # The epoch's line comes after the workers agreed to go on: the SIGTERM lands in training.
    workers[0].wait_for(rf"^Resuming from .*ckpt-\d+: epoch 1, step {first_stop} of \d+\n"
                        r"(.*\n)*Epoch: 1 Learning rate")
    workers[1].proc.send_signal(signal.SIGTERM)
    stops = []
    for code, out, err in [w.wait() for w in workers]:
        stop = re.search(r"^Stopped at epoch 1 step (\d+); checkpoint saved in", err, re.M)
        assert code == 1 and stop, err[-2000:]
        stops.append(int(stop.group(1)))
    assert stops[0] == stops[1] >= first_stop
    code, out, err = _Process(_driver_args(data, save), tmp_path / "again").wait()
    assert code == 0, err[-2000:]
    assert re.search(rf"^Resuming from .*ckpt-\d+: epoch 1, step {stops[0]} of", out, re.M), out
    assert _perplexities(out) == reference


def test_killed_worker_stops_the_other_in_one_line_and_rerun_resumes(mw_data, tmp_path):
    data, reference = mw_data
    save = tmp_path / "run"
    args = lambda i: _driver_args(data, save, "--checkpoint_every_steps=20")  # noqa: E731
    workers = _workers(args, tmp_path, "w")
    workers[0].wait_for(r"^0\.[4-9]\d+ perplexity")  # past the checkpoint of step 20
    workers[1].proc.kill()
    start = time.time()
    code, out, err = workers[0].wait(timeout=120)
    assert time.time() - start < 90
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-2000:]
    assert errors[0].startswith(f"error: lost worker 1 ({workers[1].tf_address})"), errors[0]
    code, out, err = _Process(args(0), tmp_path / "again").wait()
    assert code == 0, err[-2000:]
    assert re.search(r"^Resuming from .*ckpt-\d+: epoch 1, step [2-9]\d of \d+", out, re.M)
    assert _perplexities(out) == reference


def test_workers_that_disagree_are_refused_before_training(mw_data, tmp_path):
    data, _ = mw_data
    # A budget on one worker only: a non-chief does not know the time trained before a
    # resume, and gave itself a whole budget again at every resume.
    other = ["--seed=1", "--override=hidden_size=8", "--max_minutes=600"]
    workers = _workers(lambda i: _driver_args(data, tmp_path / f"save{i}", *other[:3 * i]),
                       tmp_path, "w")
    for code, out, err in [w.wait() for w in workers]:
        assert code != 0 and "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert errors == [f"error: workers disagree before training: worker 1 "
                          f"({workers[1].tf_address}) has another config and seed and time "
                          f"budget (--max_minutes) than worker 0 ({workers[0].tf_address}); "
                          f"start every worker with the same flags, seed and data"], err[-2000:]
        assert "Epoch: 1" not in out
    assert not (tmp_path / "save0").exists() and not (tmp_path / "save1").exists()


def test_a_hung_worker_stops_the_other_after_the_collective_timeout(mw_data, tmp_path):
    # Alive but stopped (SIGSTOP): the heartbeats still answer, so only the timeout of a
    # step's collectives, now one watchdog thread, can end the wait.
    data, _ = mw_data
    workers = _workers(lambda i: _driver_args(data, tmp_path / f"save{i}",
                                              "--override=max_max_epoch=50",
                                              "--collective_timeout_seconds=3"), tmp_path, "w")
    try:
        workers[0].wait_for(r"^0\.\d+ perplexity")
        os.kill(workers[1].proc.pid, signal.SIGSTOP)
        code, _, err = workers[0].wait(timeout=120)
    finally:
        workers[1].proc.kill()
    assert code == 1 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: a collective got no answer from the other workers in 3 s (worker "
                      "0 stops); if that worker printed an error, fix what it names; then rerun "
                      "every worker to resume from the last checkpoint"], err[-2000:]


def test_unreachable_peer_fails_in_one_line_naming_it(tiny_corpus, tmp_path):
    port0, port1 = distribute.free_loopback_ports(2)
    lone = _Process(["--model=test", f"--data_path={tiny_corpus}",
                     f"--save_path={tmp_path / 'run'}", "--connect_timeout_seconds=3"],
                    tmp_path / "lone",
                    {"cluster": {"worker": [f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"]},
                     "task": {"type": "worker", "index": 0}})
    code, out, err = lone.wait(timeout=120)
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: worker 0 waited 3 s for the cluster: worker 1 at "
                      f"127.0.0.1:{port1} unreachable; start every worker (same TF_CONFIG "
                      f"cluster) or fix the addresses"], err[-2000:]
    assert tree_digest(tmp_path / "run") is None


def _lone_worker(tiny_corpus, tmp_path, ports, **kwargs):
    return _Process(["--model=test", f"--data_path={tiny_corpus}",
                     f"--save_path={tmp_path / 'run'}", "--connect_timeout_seconds=60"],
                    tmp_path / "lone",
                    {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": 0}}, **kwargs)


def _children(pid):
    """The command lines of pid's child processes."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                with open(stat.replace("stat", "cmdline"), "rb") as f:
                    found.append(f.read().decode(errors="replace"))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.parametrize("to_group", [True, False])
def test_a_signal_while_waiting_for_the_cluster_stops_in_one_line(tiny_corpus, tmp_path,
                                                                   to_group):
    # TensorFlow's join blocks the driver's own handlers: a Ctrl-C (the group's SIGINT) is
    # answered by the watchdog; a SIGINT to the driver alone ends it by the default action,
    # and the watchdog says so (it was ignored until the connect timeout). A SIGTERM there is
    # TensorFlow's: the preemption handler MultiWorkerMirroredStrategy installs as it joins.
    lone = _lone_worker(tiny_corpus, tmp_path, distribute.free_loopback_ports(2),
                        new_session=True)
    deadline = time.time() + 120
    while not any("waited" in c for c in _children(lone.proc.pid)):
        assert time.time() < deadline and lone.proc.poll() is None, lone.wait()
        time.sleep(0.2)
    time.sleep(1)
    if to_group:
        os.killpg(lone.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C reaches the group
    else:
        lone.proc.send_signal(signal.SIGINT)
    start = time.time()
    code, out, err = lone.wait(timeout=30)
    assert code != 0 and time.time() - start < 30 and "Traceback" not in err, err[-2000:]
    while "error:" not in err and time.time() - start < 30:  # the watchdog outlives the driver
        time.sleep(0.2)
        err = pathlib.Path(lone.err).read_text()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    cause = "signal 2" if to_group else "a signal"
    assert errors == [f"error: worker 0 stopped by {cause} while waiting for the cluster; "
                      "nothing was written: start it again with every worker"], err[-2000:]
    assert tree_digest(tmp_path / "run") is None


def test_worker_address_in_use_fails_in_one_line(tiny_corpus, tmp_path):
    port0, port1 = distribute.free_loopback_ports(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port0))
        taken.listen()
        code, out, err = _lone_worker(tiny_corpus, tmp_path, (port0, port1)).wait(timeout=120)
    assert code != 0 and "Traceback" not in err, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: worker 0 cannot listen on 127.0.0.1:{port0} (in use by another process or "
        f"worker?): "), err[-2000:]
    assert errors[0].endswith("; free the port or fix TF_CONFIG's addresses")


def test_run_refuses_asgd_under_a_strategy_before_writing_anything(corpus, tmp_path):
    save = tmp_path / "run"
    with pytest.raises(run.RunError, match=r"optimizer asgd .* does not run under a distribute"):
        run.train_and_evaluate(_config(corpus, optimizer="asgd"), corpus, str(save),
                               run.RunOptions(strategy="mirrored", num_cpu_replicas=2))
    assert tree_digest(save) is None


def test_a_time_budget_stops_every_worker_at_the_same_step(mw_data, tmp_path):
    # A budget of 6 ms: the chief's deadline (it knows the time trained before a resume)
    # stops both at one step; both validate, and the other waits for the chief's test
    # instead of waiting in a collective forever.
    data, _ = mw_data
    workers = _workers(lambda i: _driver_args(data, tmp_path / f"save{i}",
                                              "--max_minutes=0.0001"), tmp_path, "w")
    (code0, out0, err0), (code1, out1, err1) = [w.wait() for w in workers]
    assert code0 == 0 and code1 == 0, err0[-2000:] + err1[-2000:]
    spent = [re.findall(r"^Time budget of .+ spent at epoch 1 \(([\d.]+)%\)", out, re.M)
             for out in (out0, out1)]
    assert spent[0] and spent[0] == spent[1], (out0, out1)
    assert "Test Perplexity" in out0 and "Epoch: 2" not in out0 + out1


