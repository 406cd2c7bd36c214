"""Data-parallel training: strategy, row sharding, all-reduce; the one module that knows replicas.

    strategy none          one device: training.make_train_step as it is
    strategy mirrored      MirroredStrategy over the local GPUs (or N logical CPUs, for tests)
    strategy multi_worker  MultiWorkerMirroredStrategy from TF_CONFIG, one process per worker

The global batch stays config.batch_size (B); N replicas split its rows, and
each replica keeps its rows from batch to batch, so its carried state
continues them (replica r owns rows r*B/N .. (r+1)*B/N - 1):

    batch rows   0 .. B/N-1 | B/N .. 2B/N-1 | ... | (N-1)B/N .. B-1
    replica           0     |       1       | ... |       N-1

Each replica's cost is its rows' loss summed over time divided by the GLOBAL
B, so the replicas' costs and gradients sum to the one-device ones: the
gradients are summed by all-reduce (the embedding's IndexedSlices are
all-gathered, not densified, so the clipping norm counts the rows as one
device does), clipped on the global norm and applied identically on every
replica. Each replica's dropout masks are its rows of the whole batch's masks
drawn from (seed, global step). The final states are all-gathered into the
[B, H] variables ts.carried on every replica, so a checkpoint has the
one-device layout whatever N is, and a resume with any N slices its rows.
"""

import contextlib
import functools
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context  # abort_collective_ops, as MWMS's health check

import model as model_lib
import training
from errors import UserError, first_line

STRATEGIES = ("auto", "none", "mirrored", "multi_worker")
SUM = tf.distribute.ReduceOp.SUM
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host0:port", "host1:port"]}, '
                      '"task": {"type": "worker", "index": 0}}')
# What TensorFlow raises when a peer dies or a collective times out.
_LOST_PEER = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
              tf.errors.CancelledError, tf.errors.AbortedError)
# Waiting for the chief's single-stream test perplexity: a dead chief is seen
# by the heartbeats within seconds, so this bound only caps a hung one.
_TEST_WAIT_SECONDS = 4 * 3600
# How many wishes (save, stop on a signal, out of time) the steps agree on.
_WISHES = 3


class DistributeError(UserError):
    """A strategy that cannot run here, a bad TF_CONFIG, workers that disagree or lost a peer."""


_MAX_TIMEOUT_SECONDS = 86400.0  # a wait that long is a stuck worker, and the clock must hold it


def check_options(strategy, num_cpu_replicas, collective_timeout_seconds, connect_timeout_seconds):
    """Raises DistributeError for option values that cannot work (nothing is started)."""
    if strategy not in STRATEGIES:
        raise DistributeError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if isinstance(num_cpu_replicas, bool) or not isinstance(num_cpu_replicas, int) \
            or num_cpu_replicas < 0:
        raise DistributeError(f"num_cpu_replicas must be an integer >= 0 (0: off), got "
                              f"{num_cpu_replicas!r}")
    if num_cpu_replicas and strategy != "mirrored":
        raise DistributeError(f"num_cpu_replicas={num_cpu_replicas} needs strategy mirrored "
                              f"(it splits this CPU into logical devices), got {strategy!r}")
    for name, value in (("collective_timeout_seconds", collective_timeout_seconds),
                        ("connect_timeout_seconds", connect_timeout_seconds)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 < value <= _MAX_TIMEOUT_SECONDS:
            raise DistributeError(f"{name} must be > 0 and at most {_MAX_TIMEOUT_SECONDS:g} "
                                  f"(a day), got {value!r}")


class Cluster:
    """The workers of a TF_CONFIG and this process's index among them."""

    def __init__(self, workers, index):
        self.workers = tuple(workers)  # "host:port" each
        self.index = index


# host:port as gRPC takes it: a host name or IPv4 address, or [an IPv6 address].
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
                      r":(?P<port>[0-9]{1,5})")


def _fail_tf_config(reason):
    raise DistributeError(f"TF_CONFIG {reason}; expected e.g. {_TF_CONFIG_EXAMPLE}")


def parse_tf_config(text):
    """TF_CONFIG's JSON as a Cluster: one `worker` job, this task's index in it.

    Raises:
      DistributeError: not JSON, no worker list, a malformed address, another
        job type (chief, ps, evaluator), or an index outside the list.
    """
    try:
        spec = json.loads(text)
    except ValueError as e:
        _fail_tf_config(f"is not valid JSON ({e})")
    if not isinstance(spec, dict) or not isinstance(spec.get("cluster"), dict):
        _fail_tf_config("has no \"cluster\" object")
    cluster, task = spec["cluster"], spec.get("task")
    others = sorted(set(cluster) - {"worker"})
    if others:
        _fail_tf_config(f"has job(s) {', '.join(others)}: only a \"worker\" job is supported "
                        f"(worker 0 is the chief)")
    workers = cluster.get("worker")
    if not isinstance(workers, list) or not workers:
        _fail_tf_config("has no non-empty \"worker\" list in \"cluster\"")
    for address in workers:
        match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
        if not match or not 0 < int(match.group("port")) < 65536:
            _fail_tf_config(f"worker address {address!r} is not host:port (a host name, an IPv4 "
                            f"address or a bracketed IPv6 one, and no scheme such as grpc://)")
    if len(set(workers)) != len(workers):
        _fail_tf_config("lists a worker address twice")
    if not isinstance(task, dict) or task.get("type") != "worker":
        _fail_tf_config("needs \"task\": {\"type\": \"worker\", \"index\": I}")
    index = task.get("index")
    if isinstance(index, bool) or not isinstance(index, int):
        _fail_tf_config(f"task index {index!r} is not an integer")
    if not 0 <= index < len(workers):
        raise DistributeError(f"TF_CONFIG task index {index} is out of range: the cluster has "
                              f"{len(workers)} worker(s), indices 0..{len(workers) - 1}")
    return Cluster(workers, index)


def resolve(strategy, environ=None):
    """`auto` -> multi_worker when TF_CONFIG is set, else none; other names as they are."""
    environ = os.environ if environ is None else environ
    if strategy == "auto":
        return "multi_worker" if environ.get("TF_CONFIG") else "none"
    return strategy


def is_chief(strategy, environ=None):
    """Whether this process will be the chief (worker 0 of TF_CONFIG's cluster, or the only
    process): known before joining, from TF_CONFIG alone."""
    environ = os.environ if environ is None else environ
    if resolve(strategy, environ) != "multi_worker" or not environ.get("TF_CONFIG"):
        return True
    return parse_tf_config(environ["TF_CONFIG"]).index == 0


def free_loopback_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 now: a one-host TF_CONFIG's cluster
    (a test's, a benchmark's). Another program may take one before the worker binds it."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:  # all bound at once, so no port is handed out twice
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def check_divides(batch_size, num_replicas):
    """Raises DistributeError unless the replicas can split batch_size's rows evenly."""
    if batch_size % num_replicas:
        raise DistributeError(f"batch_size {batch_size} is not divisible by the {num_replicas} "
                              f"replicas; use a batch_size that is a multiple of {num_replicas} "
                              f"or another number of replicas")


def _digest(value):
    """A JSON value's sha256 as a float64 that holds it exactly (48 bits)."""
    text = json.dumps(value, sort_keys=True).encode()
    return float(int.from_bytes(hashlib.sha256(text).digest()[:6], "big"))


class Replicas:
    """The strategy, the rows each replica owns, and the data-parallel steps.

    Attributes:
      strategy: tf.distribute.Strategy, or None for one device.
      num_replicas: replicas in sync (1 without a strategy).
      is_chief: this process writes the run directory and runs the test.
      cluster: Cluster for multi_worker, else None.
    """

    def __init__(self, strategy=None, cluster=None, collective_timeout_seconds=300.0):
        self.strategy = strategy
        self.num_replicas = strategy.num_replicas_in_sync if strategy else 1
        self.cluster = cluster
        self.is_chief = cluster is None or cluster.index == 0
        self.timeout = collective_timeout_seconds
        # No per-collective timeout (see _Watchdog): one watchdog for the whole process.
        self.options = tf.distribute.experimental.CommunicationOptions()
        self._watchdog = _Watchdog(collective_timeout_seconds) if cluster else None

    def watched(self):
        """Around a call that holds collectives: a peer silent for the timeout fails it."""
        return self._watchdog.watching() if self._watchdog else contextlib.nullcontext()

    @property
    def name(self):
        if self.cluster:
            return f"multi_worker ({len(self.cluster.workers)} workers, this is worker " \
                   f"{self.cluster.index})"
        return f"mirrored ({self.num_replicas} replicas)" if self.strategy else "none"

    def scope(self):
        """Variables created inside are mirrored on every replica."""
        return self.strategy.scope() if self.strategy else contextlib.nullcontext()

    def rows(self, replica, batch_size):
        """(start, stop): the batch rows replica `replica` owns."""
        rows = batch_size // self.num_replicas
        return replica * rows, (replica + 1) * rows

    @staticmethod
    def _replica(ctx):
        replica = tf.get_static_value(ctx.replica_id_in_sync_group)
        if replica is None:  # MirroredStrategy and MWMS make it a constant
            raise RuntimeError("the replica id is not known when tracing")
        return int(replica)

    # ---- training

    def make_train_step(self, ts, jit_compile=False, wrap=None):
        """The step for run_epoch: (x, y) int32 [batch_size, num_steps] -> (cost, grad_norm, ...).

        With a strategy, a _DataParallelStep; without, training.make_train_step's
        (passed through `wrap`, a step -> step function, if given: one device only).
        Either has agree(outputs, *wishes) (see _DataParallelStep).
        """
        if not self.strategy:
            step = training.make_train_step(ts, jit_compile)
            return _OneDeviceStep(wrap(step) if wrap else step)
        if wrap:
            raise DistributeError("this training step cannot be wrapped under a strategy")
        return _DataParallelStep(self, ts, jit_compile)

    def any_worker(self, flag):
        """True if `flag` is True on any worker (a collective: every worker must call it)."""
        if not self.cluster:
            return bool(flag)
        value = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(float(flag)))
        with self.watched():
            return float(self.strategy.reduce(SUM, value, axis=None).numpy()) > 0

    # ---- evaluation

    def make_evaluate(self, model, batch_size, num_steps, jit_compile=False):
        """A function batches -> perplexity: validation at the training batch shape.

        With N replicas each runs its rows with its state carried, and the
        loss sums are added once at the end: the number one device gives.
        """
        if not self.strategy:
            step = training.make_eval_step(model, batch_size, num_steps, jit_compile)
            return functools.partial(training.evaluate, model, eval_step=step)
        strategy, rows = self.strategy, batch_size // self.num_replicas
        eval_step = training.make_eval_step(model, rows, num_steps, jit_compile)

        def replica_eval(x, y, state, total):
            start, stop = self.rows(self._replica(tf.distribute.get_replica_context()),
                                    batch_size)
            losses, final = eval_step(x[start:stop], y[start:stop], state)
            return final, total + tf.reduce_sum(tf.cast(losses, tf.float64))

        @tf.function
        def step(x, y, state, total):
            return strategy.run(replica_eval, args=(x, y, state, total))

        def evaluate(batches):
            state = strategy.experimental_distribute_values_from_function(
                lambda ctx: model.zero_state(rows))
            total = strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(0.0, tf.float64))
            for x, y in batches.dataset():
                state, total = step(x, y, state, total)
            with self.watched():
                total = strategy.reduce(SUM, total, axis=None)
            words = batches.epoch_size * batches.batch_size * batches.num_steps
            return training.perplexity(float(total.numpy()) / words)
        return evaluate

    # ---- multi-worker: agreement, the chief's state, checkpoints, waiting

    def check_agreement(self, run_info, max_minutes=None):
        """Refuses, before training, workers whose config, seed, vocabulary, data or time
        budget differ (only the chief knows the time trained before a resume).

        A collective: every worker calls it. Raises DistributeError naming the
        first worker that differs from worker 0 and in what.
        """
        if not self.cluster:
            return
        names = ("config", "seed", "vocabulary", "data", "time budget (--max_minutes)")
        mine = [_digest(run_info["config"]), _digest(run_info["seed"]),
                _digest(run_info["vocab_hash"]), _digest(run_info["data_hash"]),
                _digest(None if max_minutes is None else float(max_minutes))]
        value = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant([mine], tf.float64))
        with self.watched():
            table = self.strategy.gather(value, axis=0).numpy()  # [replicas, 5], worker-major
        per_worker = len(table) // len(self.cluster.workers)  # each worker's local replicas
        for replica, row in enumerate(table):
            worker = replica // per_worker
            differ = [name for name, a, b in zip(names, table[0], row) if a != b]
            if differ:
                raise DistributeError(
                    f"workers disagree before training: worker {worker} "
                    f"({self.cluster.workers[worker]}) has another {' and '.join(differ)} than "
                    f"worker 0 ({self.cluster.workers[0]}); start every worker with the same "
                    f"flags, seed and data")

    def sync_from_chief(self, variables):
        """Gives every worker the chief's values of `variables` (after the chief restored)."""
        if not self.cluster:
            return
        variables = list(variables)

        @tf.function
        def sync():
            def replica_fn():
                ctx = tf.distribute.get_replica_context()
                chief = tf.equal(ctx.replica_id_in_sync_group, 0)
                for dtype in {v.dtype for v in variables}:  # one all-reduce per dtype
                    group = [v for v in variables if v.dtype == dtype]
                    values = [tf.where(chief, v.read_value(), tf.zeros_like(v)) for v in group]
                    for var, value in zip(group, ctx.all_reduce(SUM, values,
                                                                options=self.options)):
                        var.assign(value)
            self.strategy.run(replica_fn)
        with self.watched():
            sync()

    def checkpointer(self, make_chief_checkpointer):
        """The chief's Checkpointer (made by the callable); other workers' _WorkerCheckpointer."""
        return make_chief_checkpointer() if self.is_chief else _WorkerCheckpointer()

    def wait_for_chief(self):
        """The workers but the chief wait here for its test (hours, for large)."""
        if not self.cluster:
            return
        try:
            self._meet_after_test()
        except tf.errors.DeadlineExceededError as e:
            raise DistributeError(self._lost_peer_error(e, _TEST_WAIT_SECONDS)) from None

    def release_workers(self):
        """The chief, its test done and recorded, meets the waiting workers; one already gone
        is a warning, not an error: the run is complete."""
        if not self.cluster:
            return
        try:
            self._meet_after_test()
        except _LOST_PEER as e:
            print(f"warning: after the test, {self._lost_what(e, _TEST_WAIT_SECONDS)}; the run "
                  f"is complete (its test perplexity is recorded)", file=sys.stderr, flush=True)

    def _meet_after_test(self):
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=_TEST_WAIT_SECONDS)
        value = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(0.0))
        self.strategy.extended.reduce_to(SUM, value, "/cpu:0", options=options)

    @contextlib.contextmanager
    def lost_peers_as_errors(self):
        """A dead or silent peer's TensorFlow error as one DistributeError line."""
        if not self.cluster:
            yield
            return
        try:
            yield
        except _LOST_PEER as e:
            raise DistributeError(self._lost_peer_error(e, self.timeout)) from None

    def _lost_what(self, error, timeout):
        """Who was lost, from a collective's error: 'lost worker 1 (h1:2222)', ..."""
        text = str(error)
        tasks = sorted({int(t) for t in re.findall(r"/job:worker/(?:replica:\d+/)?task:(\d+)",
                                                   text)} - {self.cluster.index})
        if tasks:
            return "lost " + ", ".join(f"worker {t} ({self.cluster.workers[t]})" for t in tasks)
        if isinstance(error, tf.errors.DeadlineExceededError):
            return f"a collective got no answer from the other workers in {timeout:g} s"
        return "lost contact with another worker"

    def _lost_peer_error(self, error, timeout):
        return (f"{self._lost_what(error, timeout)} (worker {self.cluster.index} stops); if that "
                f"worker printed an error, fix what it names; then rerun every worker to resume "
                f"from the last checkpoint")


class _OneDeviceStep:
    """training.make_train_step's step with the agree() of a data-parallel one."""

    def __init__(self, step):
        self._step = step

    def __call__(self, x, y):
        return self._step(x, y)

    def agree(self, outputs, *wishes):
        return wishes


class _DataParallelStep:
    """One data-parallel training step, traced once.

    Per replica: its rows' forward and backward pass (under XLA when asked:
    the part XLA can compile on CPU, with no collective inside), then the
    all-reduce of the gradients and of the cost, the all-gather of the final
    states, and training.apply_gradients, identical on every replica.

    agree(): signals, periodic saves and the time budget must act at the same
    step on every worker, or one would wait for the others in a collective. So
    each step also sums every worker's wishes (booleans: save, stop on a
    signal, out of time), sent with the step after they were made, and agree()
    returns for each whether any worker wished it in the step just run.
    """

    def __init__(self, replicas, ts, jit_compile):
        strategy, config = replicas.strategy, ts.config
        batch_size = config.batch_size
        options = replicas.options
        spec = tf.TensorSpec([batch_size, config.num_steps], tf.int32)
        grads_fn = tf.function(functools.partial(training.batch_gradients, ts,
                                                 global_batch_size=batch_size),
                               jit_compile=jit_compile)
        self._requests = np.zeros([_WISHES], np.float32)

        def replica_step(x, y, masks, requests):
            ctx = tf.distribute.get_replica_context()
            start, stop = replicas.rows(replicas._replica(ctx), batch_size)
            state = tf.nest.map_structure(lambda v: v[start:stop], ts.carried)
            keep = None if masks is None else model_lib.PTBModel.mask_rows(masks, start, stop)
            cost, grads, final = grads_fn(x[start:stop], y[start:stop], state, keep)
            grads = ctx.all_reduce(SUM, grads, options=options)
            summed = ctx.all_reduce(SUM, tf.concat([cost[None], requests], 0), options=options)
            final = ctx.all_gather(final, axis=0, options=options)  # [batch_size, H], row order
            grad_norm = training.apply_gradients(ts, summed[0], grads, final)
            return summed[0], grad_norm, summed[1:]

        @tf.function(input_signature=[spec, spec, tf.TensorSpec([_WISHES], tf.float32)])
        def step(x, y, requests):
            masks = training.draw_masks(ts)
            outputs = strategy.run(replica_step, args=(x, y, masks, requests))
            return tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], outputs)
        self._step = step
        self._watched = contextlib.nullcontext  # not the first call: it traces and compiles
        self._replicas = replicas                 # (minutes for large); heartbeats still run

    def __call__(self, x, y):
        with self._watched():
            outputs = self._step(x, y, tf.constant(self._requests))
        self._watched = self._replicas.watched
        self._requests[:] = 0
        return outputs

    def agree(self, outputs, *wishes):
        """This worker's wishes go with the next step; returns those agreed for this one."""
        self._requests[:] = np.maximum(self._requests, [float(w) for w in wishes])
        return tuple(bool(v > 0) for v in outputs[2].numpy()[:len(wishes)])


class _WorkerCheckpointer:
    """A non-chief worker's checkpoints: none. The chief's snapshot is the run's.

    TensorFlow's multi-worker checkpointing has every worker write, for variables
    that aggregate across workers when saved (sync-on-read). The training state
    has none: a mirrored variable saves its primary copy, read locally, so the
    chief's save holds no collective the others must join, and a non-chief's
    copy (252 MB a save for large) was written to a temporary and deleted. A
    non-chief restores nothing either: it gets the chief's values through
    Replicas.sync_from_chief.
    """

    def save(self, best=False):
        pass

    def restore(self):
        return None

    def get_history(self):
        return []

    def epoch_seconds(self):
        return 0.0  # the chief's deadline comes first, and the workers agree on it

    def set_history(self, history, epoch_seconds=0.0):
        pass

    def set_epoch_seconds(self, seconds):
        pass


class _Watchdog:
    """Fails this worker's collectives once one call holding them has run `timeout` seconds:
    a peer alive but hung. (A dead one the strategy's heartbeats find within seconds.)

    TensorFlow's own per-collective timeout starts a thread for each collective that
    sleeps the timeout out: tens a step, so thousands alive at once within a minute,
    until the process can start no more and aborts. This is one thread.
    """

    def __init__(self, timeout):
        self.timeout = timeout
        self._since = None  # when the watched call began
        threading.Thread(target=self._watch, name="collective-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def watching(self):
        self._since = time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                # The waiting collectives fail with DeadlineExceededError (see _lost_what).
                context.context().abort_collective_ops(
                    tf.errors.DEADLINE_EXCEEDED,
                    f"no answer from the other workers in {self.timeout:g} s")
                return


# ---- building the strategy

def _logical_cpus(count):
    """Splits the CPU into `count` logical devices; their names."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow's devices are up already
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise DistributeError(
                f"num_cpu_replicas={count} must be set before TensorFlow starts its devices; "
                f"set it in a fresh process (the driver does)") from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


# One strategy per devices (or cluster) and process: two strategies in one process
# would hand out the same collective keys, and their collectives would collide.
_made = {}


def _once(key, make):
    if key not in _made:
        _made[key] = make()
    return _made[key]


def _mirrored(num_cpu_replicas):
    if num_cpu_replicas:
        devices = tuple(_logical_cpus(num_cpu_replicas))
        return _once(("mirrored", devices), lambda: tf.distribute.MirroredStrategy(devices))
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise DistributeError("strategy mirrored found no GPU; pass num_cpu_replicas=N "
                              "(--num_cpu_replicas) to split the CPU for a test, or use "
                              "strategy none")
    return _once(("mirrored", "gpus"), tf.distribute.MirroredStrategy)


# The watchdog of joining the cluster, run in its own Python process: TensorFlow
# blocks in C++ holding the GIL while it waits for the workers, so no thread or
# signal handler of ours could run. If the parent has not closed our stdin
# within the deadline, name the workers that do not answer and SIGKILL it. The
# parent writes a byte before it closes stdin; a SIGINT to the parent alone ends
# it by the default action (_deadline), and its end closes without the byte.
_WATCHDOG = r"""
import os, select, signal, socket, sys
pid, seconds, index, workers = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def interrupted(signum, frame):
    # While TensorFlow joins, the parent cannot run its handlers: stop it here.
    print(f"error: worker {index} stopped by signal {signum} while waiting for the cluster; "
          f"nothing was written: start it again with every worker", file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGKILL)
    sys.exit(1)
for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, interrupted)
if select.select([sys.stdin], [], [], seconds)[0]:  # the parent is done joining, or ended
    if sys.stdin.buffer.read(1) == b"":  # it closed the pipe without a word: it was killed
        print(f"error: worker {index} stopped by a signal while waiting for the cluster; "
              f"nothing was written: start it again with every worker", file=sys.stderr,
              flush=True)
        sys.exit(1)
    sys.exit(0)
def reachable(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
        return True
    except OSError:
        return False
peers = [(i, a) for i, a in enumerate(workers) if i != index]
down = [f"worker {i} at {a}" for i, a in peers if not reachable(a)]
if peers:
    who = ", ".join(down or [f"worker {i} at {a}" for i, a in peers])
    what = f"{who} {'unreachable' if down else 'reachable but did not join'}"
else:
    what = f"its own server at {workers[index]} did not start"
print(f"error: worker {index} waited {seconds:g} s for the cluster: {what}; start every "
      f"worker (same TF_CONFIG cluster) or fix the addresses", file=sys.stderr, flush=True)
os.kill(pid, signal.SIGKILL)
"""


@contextlib.contextmanager
def _deadline(seconds, cluster):
    """Kills this process with one error line unless the block ends within `seconds`.

    Inside, SIGINT and SIGTERM take their default action (the process ends at once):
    our handlers could not run while TensorFlow joins, and nothing is written yet.
    """
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), str(cluster.index),
         *cluster.workers], stdin=subprocess.PIPE)
    in_main = threading.current_thread() is threading.main_thread()  # signal.signal's rule
    previous = {signum: signal.signal(signum, signal.SIG_DFL)
                for signum in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: one set outside Python
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        with contextlib.suppress(BrokenPipeError):  # a watchdog already gone
            watchdog.stdin.write(b"d")  # done: it ends quietly (a killed parent sends none)
            watchdog.stdin.close()
        watchdog.wait()


def _check_own_address(cluster):
    """Raises DistributeError if this worker's own host does not resolve here: its server
    could not start, and the join would wait out the connect timeout."""
    address = cluster.workers[cluster.index]
    match = _ADDRESS.fullmatch(address)  # parse_tf_config checked it
    try:
        socket.getaddrinfo(match.group("host").strip("[]"), int(match.group("port")),
                           type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise DistributeError(f"worker {cluster.index}'s own address {address} does not resolve "
                              f"on this machine ({e}); fix TF_CONFIG's task index or addresses"
                              ) from None


def create(strategy, batch_size, num_cpu_replicas=0, collective_timeout_seconds=300.0,
           connect_timeout_seconds=120.0, environ=None):
    """The Replicas of `strategy`, checked against batch_size before TensorFlow starts.

    Call before anything else initialises TensorFlow's devices (logical CPUs
    and the multi-worker server must come first).

    Raises:
      DistributeError: bad TF_CONFIG, no GPU for mirrored, batch_size not
        divisible by the replicas, devices already initialised.
    """
    environ = os.environ if environ is None else environ
    strategy = resolve(strategy, environ)
    if strategy == "none":
        return Replicas()
    if strategy == "mirrored":
        if num_cpu_replicas:
            check_divides(batch_size, num_cpu_replicas)
        replicas = Replicas(_mirrored(num_cpu_replicas), None, collective_timeout_seconds)
        check_divides(batch_size, replicas.num_replicas)
        return replicas
    if not environ.get("TF_CONFIG"):
        raise DistributeError(f"strategy multi_worker needs TF_CONFIG in the environment, "
                              f"e.g. {_TF_CONFIG_EXAMPLE}")
    cluster = parse_tf_config(environ["TF_CONFIG"])
    check_divides(batch_size, len(cluster.workers))
    _check_own_address(cluster)
    with _deadline(connect_timeout_seconds, cluster):
        resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": list(cluster.workers)}), task_type="worker",
            task_id=cluster.index, rpc_layer="grpc")
        try:
            mwms = _once(("multi_worker", cluster.workers, cluster.index),
                         lambda: tf.distribute.MultiWorkerMirroredStrategy(
                             cluster_resolver=resolver))
        except tf.errors.OpError as e:
            address = cluster.workers[cluster.index]
            if re.search(r"could not start grpc server|address already in use", str(e), re.I):
                raise DistributeError(f"worker {cluster.index} cannot listen on {address} (in "
                                      f"use by another process or worker?): {first_line(e)}; free "
                                      f"the port or fix TF_CONFIG's addresses") from None
            raise DistributeError(f"worker {cluster.index} at {address} could not join the "
                                  f"cluster of TF_CONFIG: {first_line(e)}; fix TF_CONFIG's "
                                  f"addresses") from None
        replicas = Replicas(mwms, cluster, collective_timeout_seconds)
        with replicas.lost_peers_as_errors():  # a peer may die as soon as it has joined
            replicas.any_worker(False)  # every worker has joined
    check_divides(batch_size, replicas.num_replicas)
    return replicas
