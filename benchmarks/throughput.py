"""Throughput: training and evaluation words/s and peak memory per config and mode, against peers.

Every (config, mode) is measured in its own process (measure.py, through the
hidden `_measure` command). One line is printed per measurement, then a
Markdown table, and the last line is one JSON object holding every figure.
Absolute words/s drift on a shared machine; the ratios to peers measured back
to back in the same invocation hold better, and --rounds=N alternates N rounds
of peers and modes and reports the medians. With --ceiling each round also
measures the config's matrix-product ceiling (ceiling.py), with the same
overrides and vocabulary as the modes, and each mode's fraction of its median
is reported, and of the ceiling with the softmax loss's passes.
"""

import dataclasses
import os
import re
import statistics
import sys

import errors
import precision as precision_lib
import reader
from benchmarks import PEER_ENV, common
from benchmarks import ceiling as ceiling_lib
from benchmarks import measure as measure_lib
from benchmarks.measure import Measurement, Mode
from rnn import kernels

MODES = (*kernels.NAMES, kernels.AUTO)  # what --rnn_modes accepts: the kernel table's names
PEERS = ("keras", "torch")
PEER_CONFIGS = ("small", "medium", "large")  # the only configs the peer harnesses know
# Where the peer harnesses (keras_peer.py, torch_peer.py) and the torch venv live: flags or env.
DEFAULT_PEER_DIR = os.environ.get("PTB_PEER_DIR", "")
DEFAULT_TORCH_PYTHON = os.environ.get("PTB_TORCH_PYTHON", "")


@dataclasses.dataclass
class PeerResult:
    """One peer harness's words/s on one config; error (None when fine) says why there are none:
    "skipped: ..." (not run) or "failed: ..."."""
    peer: str
    config: str
    train_wps: float | None = None
    peak_rss_mb: float | None = None  # the harness process's own peak
    harness: str | None = None  # the name the harness reports
    rounds_train_wps: list | None = None  # each round's, with --rounds > 1
    error: str | None = None


@dataclasses.dataclass
class CeilingSummary:
    """A config's ceiling over the rounds that measured one: the medians and each round's.

    train_wps/eval_wps are the best-kernel ceiling; xla_* XLA's dots alone; *_with_loss
    the best-kernel one with the softmax loss's passes (ceiling.py). failed_rounds holds
    the error of each round that measured none; with no round measured, error says why."""
    config: str
    train_wps: float | None = None
    eval_wps: float | None = None
    rounds_train_wps: list = dataclasses.field(default_factory=list)
    xla_train_wps: float | None = None
    xla_eval_wps: float | None = None
    train_wps_with_loss: float | None = None
    eval_wps_with_loss: float | None = None
    bfloat16_train_wps: float | None = None  # the training ceilings of --precision=bfloat16
    bfloat16_train_wps_with_loss: float | None = None
    env: str = ""  # the --env variant it was measured under (measure.env_label), "" for none
    failed_rounds: list = dataclasses.field(default_factory=list)
    error: str | None = None


# -------------------- flags

def _parse_bool(text):
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise common.BenchmarkError(f"--xla value {text!r}: expected 0/1 (or true/false)")


def parse_env(items):
    """--env values as environment variants: each "" (the environment as it is) or
    NAME=VALUE pairs joined by ";", e.g. XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=

    Raises:
      BenchmarkError: an item that is not NAME=VALUE.
    """
    variants = []
    for item in items or [""]:
        pairs = []
        for pair in filter(None, (p.strip() for p in item.split(";"))):
            key, sep, value = pair.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise common.BenchmarkError(f"--env item {pair!r}: expected NAME=VALUE (or "
                                            f"\"\" for the environment as it is)")
            pairs.append((key, value))
        if tuple(pairs) not in variants:
            variants.append(tuple(pairs))
    return variants


# Precisions a --rnn_modes item may name after its mode: fused+xla+bfloat16.
_SUFFIX_PRECISIONS = tuple(p for p in precision_lib.PRECISIONS if p != precision_lib.FLOAT32)


def parse_modes(rnn_modes, xla, env=()):
    """Expands e.g. --rnn_modes=basic,block+xla --xla=0,1 into Modes, in order, without repeats.

    An item spelled `<mode>+xla` is taken as it is; a bare `<mode>` is crossed
    with every --xla value, and every mode with every --env variant (parse_env).
    A last `+bfloat16` trains the mode's large products in bfloat16 (precision.py).
    The modes are the kernel table's (rnn/kernels.py) and auto.

    Raises:
      BenchmarkError: an unknown mode, --xla or --env value, or nothing to run.
    """
    xla_values = [_parse_bool(v) for v in common.split(xla)] or [False]
    variants = parse_env(env)
    modes = []
    for item in common.split(rnn_modes):
        name, *suffixes = item.split("+")
        precision = suffixes.pop() if suffixes and suffixes[-1] in _SUFFIX_PRECISIONS else None
        if name not in MODES or suffixes not in ([], ["xla"]):
            raise common.BenchmarkError(
                f"--rnn_modes item {item!r}: expected one of {', '.join(MODES)}, optionally "
                f"with +xla and then +{'/+'.join(_SUFFIX_PRECISIONS)} (e.g. basic+xla, "
                f"fused+xla+bfloat16)")
        for flag in ([True] if suffixes else xla_values):
            if precision not in (None, precision_lib.FLOAT32) and not flag:
                raise common.BenchmarkError(
                    f"--rnn_modes item {item!r} with --xla=0: {precision} compiles with XLA; "
                    f"write fused+xla+{precision}")
            for variant in variants:
                mode = Mode(name, flag, variant, precision or precision_lib.FLOAT32)
                if mode not in modes:
                    modes.append(mode)
    if not modes:
        raise common.BenchmarkError("--rnn_modes is empty; e.g. --rnn_modes=basic,block")
    return modes


def parse_peers(text):
    names = common.split(text)
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise common.BenchmarkError(f"unknown peer {unknown[0]!r}; choose from {', '.join(PEERS)}")
    return names


def _plan(args):
    """(config names, Modes, peers), every flag checked first so a typo fails before any work."""
    if args.steps < 1 or args.warmup < 1 or (args.eval_steps is not None and args.eval_steps < 1):
        raise common.BenchmarkError("--steps, --eval_steps and --warmup must be >= 1 (the "
                                    "warm-up steps trace and compile, untimed)")
    if args.rounds < 1:
        raise common.BenchmarkError(f"--rounds must be >= 1, got {args.rounds}")
    names = common.parse_configs(args.configs)
    modes = parse_modes(args.rnn_modes, args.xla, args.env)
    peers = parse_peers(args.peers)
    for name in names:
        config = measure_lib.resolve_config(name, args.override, 2)  # a bad override, now
        if args.ceiling:
            ceiling_lib.resolve_config(name, args.override)  # an LSTM, whose products it counts
        for mode in modes:  # a kernel this host, XLA or the precision cannot run
            try:
                # Under its --env variant's caps, as its process will see them.
                measure_lib.check_mode(config, mode, environ=_child_env(mode.env))
            except errors.UserError as e:
                raise common.BenchmarkError(f"{name} {mode.label}: {e}") from None
    common.check_data(args.data_path)
    _check_peers(args, peers)
    return names, modes, peers


def _check_peers(args, peers):
    """Raises BenchmarkError unless every peer asked for has its harness (and torch its
    Python), so that a typo fails before any work rather than as a skipped peer."""
    for peer in peers:
        script = os.path.join(args.peer_dir, f"{peer}_peer.py")
        if not os.path.isfile(script):
            raise common.BenchmarkError(
                f"--peers={peer}: {script} not found; pass --peer_dir (or PTB_PEER_DIR) naming "
                f"the directory of keras_peer.py and torch_peer.py, or leave the peer out")
    python = args.torch_python
    if "torch" in peers and not (python and os.path.isfile(python) and os.access(python, os.X_OK)):
        raise common.BenchmarkError(
            f"--peers=torch: torch python {python!r} is not an executable file; pass "
            f"--torch_python (or PTB_TORCH_PYTHON) naming a venv's bin/python with torch "
            f"(see {args.peer_dir}/README.md)")


# -------------------- child processes: our modes, the peers, the ceiling

def measure_in_child(args, name, mode):
    """Runs one measurement (measure.py) in a fresh process with mode.env set; returns its
    Measurement."""
    run = common.run_child(measure_lib.command(args, name, mode), env=_child_env(mode.env))
    result = common.child_result(run)
    if result is None:
        return Measurement.failed(name, mode, common.child_failure(run))
    measurement = Measurement(**result)
    measurement.mode += measure_lib.env_label(mode.env)  # the child knows no env of its own
    return measurement


def _peer_command(args, peer, name):
    """(the command running `peer` on config `name`, None) or (None, why it cannot run)."""
    script = os.path.join(args.peer_dir, f"{peer}_peer.py")  # both checked by _check_peers
    python = sys.executable if peer == "keras" else args.torch_python
    if name not in PEER_CONFIGS:
        return None, f"the peer harnesses have no {name!r} config"
    cmd = [python, script, "--config", name, "--warmup", str(args.warmup),
           "--batches", str(args.steps)]
    if peer == "torch":  # keras_peer.py always reads <peer_dir>/../data/ptb
        cmd += ["--data", os.path.join(args.data_path, "ptb.train.txt")]
    return cmd, None


def run_peer(args, peer, name):
    """Runs one peer harness on one config, in the environment as given; returns a PeerResult."""
    cmd, why_not = _peer_command(args, peer, name)
    if cmd is None:
        return PeerResult(peer, name, error=f"skipped: {why_not}")
    try:
        run = common.run_child(cmd, env=PEER_ENV)
    except OSError as e:  # the harness or its Python gone or unrunnable since the plan
        return PeerResult(peer, name, error=f"failed: cannot run {cmd[0]}: {e.strerror}")
    result = common.child_result(run)
    if result is None or "train_wps" not in result:
        return PeerResult(peer, name, error=f"failed: {common.child_failure(run)}")
    try:
        train_wps = float(result["train_wps"])
    except (TypeError, ValueError):
        return PeerResult(peer, name, error=f"failed: train_wps is not a number: "
                                            f"{result['train_wps']!r}"[:200])
    if not train_wps > 0 or train_wps == float("inf"):
        return PeerResult(peer, name, error=f"failed: train_wps {train_wps} is not a speed")
    return PeerResult(peer, name, train_wps=train_wps, peak_rss_mb=run.peak_rss_mb,
                      harness=result.get("peer"))


def ceiling_overrides(args):
    """The overrides that make the ceiling's config the modes' own: --override, and the
    vocabulary size of the data (the modes take it from the data, as the driver does)."""
    vocab_size = reader.load_corpus(args.data_path).vocab_size
    return [*args.override, f"vocab_size={vocab_size}"]


def _ceiling_command(name, overrides):
    return common.script_command("ceiling", f"--configs={name}", "--sgemm_n=0",
                                 *[f"--override={item}" for item in overrides])


def _child_env(env):
    """A child's environment: ours with the (name, value) pairs of `env` on top; None (ours
    as it is) without any."""
    return dict(os.environ, **dict(env)) if env else None


def run_ceiling(name, overrides, env=()):
    """Config `name`'s ceiling with `overrides` (ceiling.py), in a child process so it runs
    alone as the measurements do, with the (name, value) pairs of `env` set (a mode's --env
    variant, whose ISA caps the ceiling must share); returns a ceiling.Ceiling."""
    run = common.run_child(_ceiling_command(name, overrides), env=_child_env(env))
    summary = common.child_result(run)
    if not summary or not summary.get("results"):
        return ceiling_lib.Ceiling(name, error=common.child_failure(run))
    return ceiling_lib.Ceiling.from_dict(summary["results"][0])


# -------------------- rounds, ratios, ceiling fractions

def add_ratios(result, peer_results):
    """Sets result's peer_wps, fastest_peer and ratio_to_fastest_peer (train_wps over the
    fastest peer's on the same config, of the peers that have a speed)."""
    timed = _add_peers(result, peer_results)
    result.ratio_to_fastest_peer = (result.train_wps / timed[result.fastest_peer]
                                    if timed and result.train_wps else None)


def _add_peers(result, peer_results):
    """Sets result's peer_wps and fastest_peer; returns peer_wps."""
    timed = {p.peer: p.train_wps for p in peer_results
             if p.config == result.config and p.error is None}
    result.peer_wps = timed
    result.fastest_peer = max(timed, key=timed.get) if timed else None
    return timed


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _seconds_at(seconds, wps, median_wps):
    """The seconds a round's words would take at median_wps; None if any is unknown."""
    if None in (seconds, wps, median_wps) or not median_wps:
        return None
    return seconds * wps / median_wps


def combine_rounds(rounds):
    """One measurement's rounds as one Measurement: the median of each speed and its time, the
    largest peak RSS, and with more than one round each round's training words/s and
    ratio. A failed round is the result."""
    failed = [r for r in rounds if r.error is not None]
    if failed or len(rounds) == 1:
        return (failed or rounds)[0]
    ratios = [r.ratio_to_fastest_peer for r in rounds]
    ratios = ratios if None not in ratios else None
    last = rounds[-1]
    train_wps, eval_wps = (_median(r.train_wps for r in rounds),
                           _median(r.eval_wps for r in rounds))
    return dataclasses.replace(
        last, train_wps=train_wps, eval_wps=eval_wps,
        # every round times the same words: the time of the median speed
        train_seconds=_seconds_at(last.train_seconds, last.train_wps, train_wps),
        eval_seconds=_seconds_at(last.eval_seconds, last.eval_wps, eval_wps),
        stream_eval_seconds=_median(r.stream_eval_seconds for r in rounds),
        peak_rss_mb=max(r.peak_rss_mb for r in rounds),
        rounds_train_wps=[r.train_wps for r in rounds],
        # each round's ratio is side by side in time: their median, not a ratio of medians
        ratio_to_fastest_peer=statistics.median(ratios) if ratios else None,
        rounds_ratio_to_fastest_peer=ratios)


def combine_peer_rounds(rounds):
    """One peer's rounds as one PeerResult, as combine_rounds; a failed round is the result
    (its error says which round, when there were several)."""
    failed = [(i, r) for i, r in enumerate(rounds) if r.error is not None]
    if failed and len(rounds) > 1:
        i, first = failed[0]
        return dataclasses.replace(first, error=f"{first.error} (round {i + 1} of {len(rounds)})")
    if failed or len(rounds) == 1:
        return (failed[0][1] if failed else rounds[0])
    return dataclasses.replace(rounds[-1], train_wps=_median(r.train_wps for r in rounds),
                               peak_rss_mb=max(r.peak_rss_mb for r in rounds),
                               rounds_train_wps=[r.train_wps for r in rounds])


def _median_of_known(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _median_if_all(values):
    """The median, or None if any round lacks the figure (a ceiling from older code), so a
    figure's median is over the same rounds as the products-only one."""
    values = list(values)
    return None if None in values else statistics.median(values)


def add_ceiling(results, ceiling_rounds, env=()):
    """Sets each result's fraction of its config's ceiling (the median over the rounds that
    measured one); returns that CeilingSummary (with the failed rounds' errors), or None
    without rounds. env: the --env variant the rounds ran under."""
    if not ceiling_rounds:
        return None
    timed = [c for c in ceiling_rounds if c.error is None]
    failed = [c.error for c in ceiling_rounds if c.error is not None]
    head = dict(config=ceiling_rounds[0].config, env=measure_lib.env_label(env).strip(),
                failed_rounds=failed)
    if not timed:
        return CeilingSummary(**head, error=failed[0])
    summary = CeilingSummary(**head,
                             train_wps=statistics.median(c.train_wps for c in timed),
                             eval_wps=statistics.median(c.eval_wps for c in timed),
                             rounds_train_wps=[c.train_wps for c in timed],
                             xla_train_wps=_median_of_known(c.xla_train_wps for c in timed),
                             xla_eval_wps=_median_of_known(c.xla_eval_wps for c in timed),
                             train_wps_with_loss=_median_if_all(
                                 c.train_wps_with_loss for c in timed),
                             eval_wps_with_loss=_median_if_all(
                                 c.eval_wps_with_loss for c in timed),
                             bfloat16_train_wps=_median_if_all(
                                 c.bfloat16_train_wps for c in timed),
                             bfloat16_train_wps_with_loss=_median_if_all(
                                 c.bfloat16_train_wps_with_loss for c in timed))
    for result in results:
        if result.error is None:
            result.ceiling_wps = _ceiling_of(summary, result.precision)
            result.of_ceiling = {key: getattr(result, key.removesuffix("_with_loss")) / wps
                                 for key, wps in result.ceiling_wps.items()}
    return summary


def _ceiling_of(summary, precision):
    """The ceilings (_CEILING_KEYS) a mode of `precision` is held against: bfloat16's
    training ones for --precision=bfloat16 (its evaluation is float32), where measured."""
    wps = {key: getattr(summary, key) for key in _CEILING_KEYS}
    if precision == precision_lib.BFLOAT16:
        wps["train_wps"] = summary.bfloat16_train_wps
        wps["train_wps_with_loss"] = summary.bfloat16_train_wps_with_loss
    return {key: value for key, value in wps.items() if value is not None}


# The ceilings a measurement is held against: best-kernel, and with the loss's passes.
_CEILING_KEYS = ("train_wps", "eval_wps", "train_wps_with_loss", "eval_wps_with_loss")


def _measure_rounds(args, name, modes, peers, overrides_for_ceiling=None):
    """args.rounds rounds of (every peer, every mode, then with args.ceiling the ceiling,
    with `overrides_for_ceiling`, under each --env variant of the modes) on config `name`,
    alternating so that a slow spell of a shared machine hits all of them; returns
    (Measurements, PeerResults, CeilingSummaries), each the median of its rounds.

    A mode's ratio is the median of its rounds' ratios, each to that round's fastest of
    the peers that ran in every round (a peer failed in one round is left out of all)."""
    envs = list(dict.fromkeys(mode.env for mode in modes))
    peer_rounds, mode_rounds = [[] for _ in peers], [[] for _ in modes]
    ceiling_rounds = {env: [] for env in envs} if args.ceiling else {}
    for round_index in range(args.rounds):
        if args.rounds > 1:
            print(f"{name}: round {round_index + 1} of {args.rounds}", flush=True)
        # Peers first, so each of the project's lines can show its ratio as it is printed.
        for peer, rounds in zip(peers, peer_rounds):
            rounds.append(run_peer(args, peer, name))
            print(describe_peer(rounds[-1]), flush=True)
        for mode, rounds in zip(modes, mode_rounds):
            rounds.append(measure_in_child(args, name, mode))
            add_ratios(rounds[-1], [r[-1] for r in peer_rounds])
            print(describe_result(rounds[-1]), flush=True)
        for env, rounds in ceiling_rounds.items():
            rounds.append(run_ceiling(name, overrides_for_ceiling or [], env))
            print(ceiling_lib.describe(rounds[-1]) + measure_lib.env_label(env), flush=True)
    name_peers = [combine_peer_rounds(rounds) for rounds in peer_rounds]
    complete = [rounds for rounds, peer in zip(peer_rounds, name_peers) if peer.error is None]
    name_results = []
    for rounds in mode_rounds:
        for index, result in enumerate(rounds):
            if result.error is None:
                add_ratios(result, [peer[index] for peer in complete])
        result = combine_rounds(rounds)  # one round: that round's, ratio and peers
        if result.error is None and args.rounds > 1:
            _add_peers(result, name_peers)  # the peers' medians, and the fastest of them
            if result.ratio_to_fastest_peer is not None:
                # the peers the rounds' ratios were taken against, fastest by median first
                against = {r.fastest_peer for r in rounds}
                result.fastest_peer = "/".join(sorted(against,
                                                      key=lambda p: p != result.fastest_peer))
        name_results.append(result)
    summaries = [add_ceiling([r for r, mode in zip(name_results, modes) if mode.env == env],
                             rounds, env)
                 for env, rounds in ceiling_rounds.items()]
    return name_results, name_peers, summaries


# -------------------- report

def describe_result(result):
    """The human-readable line of one measurement."""
    head = f"{result.config} {result.mode}:"
    if result.error is not None:
        error = result.error
        return f"{head} FAILED ({error[:200] + '...' if len(error) > 200 else error})"
    line = (f"{head} train {common.num(result.train_wps)} wps, "
            f"eval {common.num(result.eval_wps)} wps, "
            f"peak RSS {common.num(result.peak_rss_mb)} MB")
    if result.stream_eval_seconds is not None:
        line += f", stream test eval {result.stream_eval_seconds:.1f} s"
    if result.ratio_to_fastest_peer is not None:
        line += f", {result.ratio_to_fastest_peer:.2f}x {result.fastest_peer}"
    return line


def describe_peer(peer):
    """The human-readable line of one peer run."""
    head = f"{peer.config} peer {peer.peer}:"
    if peer.error is not None:
        return f"{head} {peer.error}"
    return (f"{head} train {common.num(peer.train_wps)} wps, "
            f"peak RSS {common.num(peer.peak_rss_mb)} MB")


def throughput_table(results, peer_results):
    """Markdown: one row per measurement, then the peers' rows of the same config."""
    rows = ["| config | mode | train wps | eval wps | stream test eval s | peak RSS MB "
            "| vs fastest peer (median of the rounds) | of best-kernel ceiling, train / eval "
            "| of it with the loss's passes |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.error is not None:
            rows.append(f"| {r.config} | {r.mode} | failed | | | | | | |")
            continue
        of_ceiling = _fractions(r.of_ceiling, "train_wps", "eval_wps")
        of_with_loss = _fractions(r.of_ceiling, "train_wps_with_loss", "eval_wps_with_loss")
        vs = (common.DASH if r.ratio_to_fastest_peer is None else
              f"{r.ratio_to_fastest_peer:.2f}x ({r.fastest_peer})")
        if r.rounds_ratio_to_fastest_peer:
            vs += " rounds " + " ".join(f"{x:.2f}x" for x in r.rounds_ratio_to_fastest_peer)
        rows.append(f"| {r.config} | {r.mode} | {common.num(r.train_wps)} "
                    f"| {common.num(r.eval_wps)} "
                    f"| {common.num(r.stream_eval_seconds, '{:.1f}')} "
                    f"| {common.num(r.peak_rss_mb)} | {vs} | {of_ceiling} | {of_with_loss} |")
    for peer in peer_results:
        if peer.error is None:
            rows.append(f"| {peer.config} | peer: {peer.peer} | {common.num(peer.train_wps)} "
                        f"| {common.DASH} | {common.DASH} | {common.num(peer.peak_rss_mb)} "
                        f"| | | |")
        elif _peer_failed(peer):  # left out of every ratio: say so where the ratios are
            rows.append(f"| {peer.config} | peer: {peer.peer} | failed | | | | | | |")
    return "\n".join(rows)


def _peer_failed(peer):
    """Whether a peer ran and failed (not skipped: a config or harness it does not have)."""
    return peer.error is not None and not peer.error.startswith("skipped:")


def describe_ceiling_failures(summaries):
    """One line per config whose ceiling failed in some round (its fractions are over the
    other rounds, or missing)."""
    return [f"{s.config} ceiling{' ' + s.env if s.env else ''}: failed in "
            f"{len(s.failed_rounds)} round(s): {s.failed_rounds[0][:200]}"
            for s in summaries if s.failed_rounds]


def _fractions(of_ceiling, train_key, eval_key):
    """"train% / eval%" of a measurement's of_ceiling, or a dash where it has none."""
    if not of_ceiling or train_key not in of_ceiling or eval_key not in of_ceiling:
        return common.DASH
    return f"{of_ceiling[train_key]:.0%} / {of_ceiling[eval_key]:.0%}"


def _peer_notes(args, peers):
    """Why a ratio to a peer may not be like for like."""
    notes = []
    if peers and args.override:
        notes.append(f"the peers ignore --override {' '.join(args.override)}: the ratios "
                     f"compare different models")
    keras_data = os.path.join(args.peer_dir, os.pardir, "data", "ptb", "ptb.train.txt")
    ours = os.path.join(args.data_path, "ptb.train.txt")
    if "keras" in peers and os.path.realpath(keras_data) != os.path.realpath(ours):
        notes.append(f"keras_peer.py reads {os.path.realpath(keras_data)}, not {ours}")
    capped = [env for env in parse_env(args.env) if common.isa_caps(dict(env))]
    if peers and capped:
        notes.append(f"the peers run without --env, so the ISA caps of "
                     f"{', '.join(measure_lib.env_label(env).strip() for env in capped)} do not "
                     f"reach them: those variants' ratios compare different instruction sets "
                     f"(export the caps for the whole command to cap the peers too)")
    return notes


def _print_dry_run(args, names, modes, peers, overrides_for_ceiling):
    for name in names:
        for peer in peers:
            cmd, why_not = _peer_command(args, peer, name)
            print(f"{name} peer {peer}: {' '.join(cmd) if cmd else 'skipped: ' + why_not}")
        for mode in modes:
            print(f"{name} {mode.label}: {' '.join(measure_lib.command(args, name, mode))}")
        for env in dict.fromkeys(mode.env for mode in modes) if args.ceiling else ():
            command = " ".join(_ceiling_command(name, overrides_for_ceiling))
            print(f"{name} ceiling{measure_lib.env_label(env)}: {command}")


def run(args):
    """The `throughput` command.

    Args:
      args: argparse.Namespace of the throughput flags (scripts/benchmark.py).
    Returns:
      the exit code: 1 if a measurement, a peer or a round of the ceiling failed, else 0.
    Raises:
      BenchmarkError, ConfigError, DataError: a bad flag value or missing data.
    """
    names, modes, peers = _plan(args)
    overrides_for_ceiling = ceiling_overrides(args) if args.ceiling else None
    notes = _peer_notes(args, peers)
    for note in notes:
        print(f"note: {note}", flush=True)
    if args.dry_run:
        _print_dry_run(args, names, modes, peers, overrides_for_ceiling)
        return 0
    results, peer_results, ceilings = [], [], []
    for name in names:
        name_results, name_peers, name_ceilings = _measure_rounds(
            args, name, modes, peers, overrides_for_ceiling)
        results += name_results
        peer_results += name_peers
        ceilings += name_ceilings
    print()
    print(throughput_table(results, peer_results))
    for line in describe_ceiling_failures(ceilings):
        print(line)
    print()
    common.print_summary(
        "throughput", data_path=os.path.abspath(args.data_path), warmup=args.warmup,
        steps=args.steps, eval_steps=args.eval_steps or args.steps, rounds=args.rounds,
        overrides=args.override, results=[dataclasses.asdict(r) for r in results],
        peers=[dataclasses.asdict(p) for p in peer_results],
        ceilings=[dataclasses.asdict(c) for c in ceilings], notes=notes)
    failed = (any(r.error is not None for r in results) or any(map(_peer_failed, peer_results))
              or any(c.failed_rounds for c in ceilings))
    return 1 if failed else 0
