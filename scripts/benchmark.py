"""Benchmarks: speed per config and LSTM mode (vs. peers), the product ceiling, perplexity tables.

The command line of the benchmarks/ package: flags in, one call of a tool out.

    python scripts/benchmark.py throughput --data_path=/path/to/ptb --configs=small,medium \\
        --rnn_modes=basic,block --xla=0,1 --warmup=20 --steps=300 --stream_eval \\
        --peers=keras,torch
    python scripts/benchmark.py throughput --configs=small --rnn_modes=fused+xla --ceiling \\
        --rounds=3 --override=num_steps=35    # the ceiling gets the same overrides
    python scripts/benchmark.py perplexity --data_path=/path/to/ptb --configs=small,medium \\
        --root=runs --rnn_mode=block              # unknown flags go to ptb_word_lm.py
    python scripts/benchmark.py perplexity --data_path=/path/to/ptb --configs=small --collect_only
    python scripts/benchmark.py ceiling --configs=small,medium,large
    python scripts/benchmark.py throughput --configs=medium --rnn_modes=fused+xla,fused+xla+bfloat16
    python scripts/benchmark.py scaling --data_path=/path/to/ptb --configs=small,medium,large
    python scripts/benchmark.py profile --data_path=/path/to/ptb --configs=medium --steps=20
    python scripts/benchmark.py profile --data_path=/path/to/ptb --configs=small --phase=eval
    python scripts/benchmark.py throughput --configs=small --rnn_modes=fused+xla --rounds=3 \
        --env= --env=XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=   # each mode both ways

throughput (benchmarks/throughput.py): words/s and peak memory of each (config,
mode), each measured in its own process (benchmarks/measure.py), beside the
peers and with --ceiling the config's ceiling; a table, then one JSON line.
ceiling (benchmarks/ceiling.py): the words/s of a step that did nothing but its
matrix products, each timed alone on its fastest kernel (XLA's dot or
TensorFlow's MatMul, either layout of the weights; a per-step product also
transposed whole), beside XLA's alone and the machine's peak;
and with the softmax loss's own passes added (timed the same way); and the
training ceiling of --precision=bfloat16 (the products over all time steps also
on bfloat16 MatMuls).
scaling (benchmarks/scaling.py): 1 worker on one core against 2 workers on one
core each (multi_worker on loopback ports), the efficiency, the all-reduce's
share of a step and the arithmetic for --workers on a --gbps network.
profile (benchmarks/profile.py): training steps (or with --phase=eval, validation's
forward-only steps) under tf.profiler, the self time of XLA's thunks and
TensorFlow's ops summed by name and by kind.
perplexity (benchmarks/perplexity.py): runs ptb_word_lm.py for each config into
<root>/<config> (rerunning resumes), then tabulates each metrics.json.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# The package first: it sets TensorFlow's environment before anything imports TensorFlow.
import benchmarks  # noqa: E402,F401
import configs  # noqa: E402
import errors  # noqa: E402
import precision  # noqa: E402
import reader  # noqa: E402
from benchmarks import ceiling, measure, perplexity, profile, scaling, throughput  # noqa: E402


def _add_common(parser):
    parser.add_argument("--data_path", default=reader.DEFAULT_DATA_PATH,
                        help="directory with ptb.{train,valid,test}.txt (default: %(default)s)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print what would run, run nothing")


def _add_throughput(sub):
    tp = sub.add_parser("throughput", allow_abbrev=False,
                        help="training/evaluation words/s and peak memory per config and mode")
    _add_common(tp)
    tp.add_argument("--configs", default="small",
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    tp.add_argument("--rnn_modes", default="basic,block",
                    help=f"comma list of {','.join(throughput.MODES)}, each optionally +xla, "
                         f"then optionally +bfloat16 (the training step's large products in "
                         f"bfloat16, precision.py)")
    tp.add_argument("--xla", default="0", help="comma list of 0/1 crossed with bare --rnn_modes")
    tp.add_argument("--env", action="append", default=[],
                    help="repeatable: measure every mode also with these environment variables, "
                         "NAME=VALUE joined by ';' (\"\" : as it is), e.g. "
                         "--env= --env=XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=")
    tp.add_argument("--warmup", type=int, default=20,
                    help="untimed steps first (tracing, compiling); at least 1")
    tp.add_argument("--steps", type=int, default=300, help="timed training steps")
    tp.add_argument("--rounds", type=int, default=1,
                    help="measure every peer and mode this many times, alternating; report "
                         "medians, and as the ratio to the fastest peer the median of the "
                         "rounds' ratios (each shown)")
    tp.add_argument("--eval_steps", type=int, default=None,
                    help="timed eval steps (default: --steps)")
    tp.add_argument("--stream_eval", action="store_true",
                    help="also time the exact one-stream test perplexity")
    tp.add_argument("--ceiling", action="store_true",
                    help="also measure each config's matrix-product ceiling (same overrides) "
                         "every round and report each mode's fraction of its median")
    tp.add_argument("--override", action="append", default=[], help="config key=value, repeatable")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--peers", default="", help=f"comma list of {','.join(throughput.PEERS)}")
    tp.add_argument("--peer_dir", default=throughput.DEFAULT_PEER_DIR,
                    help="directory of keras_peer.py and torch_peer.py")
    tp.add_argument("--torch_python", default=throughput.DEFAULT_TORCH_PYTHON)


def _add_perplexity(sub):
    pp = sub.add_parser("perplexity", allow_abbrev=False,
                        help="train configs with ptb_word_lm.py and tabulate their perplexities; "
                             "unknown flags are passed to the driver")
    _add_common(pp)
    pp.add_argument("--configs", default="small,medium,large")
    pp.add_argument("--root", default="runs", help="save_path of config X is <root>/X")
    pp.add_argument("--collect_only", action="store_true",
                    help="tabulate existing <root>/<config>/metrics.json, train nothing")
    pp.add_argument("--output", help="also write the Markdown table here")


def _add_ceiling(sub):
    cp = sub.add_parser("ceiling", allow_abbrev=False,
                        help="the words/s a step would reach if its matrix products ran at the "
                             "speed measured for each shape and nothing else took time; and "
                             "with the softmax loss's passes")
    cp.add_argument("--configs", default="small,medium,large",
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    cp.add_argument("--override", action="append", default=[], help="config key=value, repeatable")
    cp.add_argument("--min_seconds", type=float, default=0.3,
                    help="time each product and layout, and each form of the loss, for at "
                         "least this long per sweep (the loss's 10 forms add 10 x this x "
                         "--sweeps)")
    cp.add_argument("--sweeps", type=int, default=3,
                    help="sweeps through every product; each product's fastest counts")
    cp.add_argument("--sgemm_n", type=int, default=2048,
                    help="the machine's peak: time an [n, n] x [n, n] sgemm; 0: skip it")


def _add_profile(sub):
    pp = sub.add_parser("profile", allow_abbrev=False,
                        help="where a step's time goes: steps under tf.profiler, the "
                             "self time of XLA's thunks and TensorFlow's ops summed by name")
    _add_common(pp)
    pp.add_argument("--configs", default="small",
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    pp.add_argument("--rnn_mode", default="auto", choices=throughput.MODES)
    pp.add_argument("--xla", type=int, choices=(0, 1), default=1)
    pp.add_argument("--precision", default=precision.FLOAT32, choices=precision.PRECISIONS,
                    help="of the training step's large products (precision.py)")
    pp.add_argument("--warmup", type=int, default=10, help="untimed steps first (tracing)")
    pp.add_argument("--steps", type=int, default=20, help="profiled steps")
    pp.add_argument("--phase", choices=profile.PHASES, default="train",
                    help="train: training steps; eval: the forward-only validation step")
    pp.add_argument("--top", type=int, default=25, help="rows of each table")
    pp.add_argument("--override", action="append", default=[], help="config key=value, repeatable")
    pp.add_argument("--seed", type=int, default=0)


def _add_scaling(sub):
    sp = sub.add_parser("scaling", allow_abbrev=False,
                        help="words/s of 1 worker on one core against 2 workers on one core "
                             "each; the all-reduce's share; a projection to --workers")
    _add_common(sp)
    sp.add_argument("--configs", default=scaling.DEFAULT_CONFIGS,
                    help=f"comma list of {','.join(configs.CONFIGS)}")
    sp.add_argument("--warmup", type=int, default=10, help="untimed steps first (tracing)")
    sp.add_argument("--steps", type=int, default=50, help="timed training steps")
    sp.add_argument("--override", action="append", default=[], help="config key=value, repeatable")
    sp.add_argument("--workers", type=int, default=4,
                    help="project to this many workers (batch_size must split into them)")
    sp.add_argument("--gbps", type=float, default=10.0, help="... on a network of this many Gb/s")


def _add_scaling_worker(sub):
    wp = sub.add_parser("_scaling_worker", allow_abbrev=False)  # one measuring process
    wp.add_argument("--config", required=True)
    wp.add_argument("--warmup", type=int, required=True)
    wp.add_argument("--steps", type=int, required=True)
    wp.add_argument("--data_path", required=True)
    wp.add_argument("--override", action="append", default=[])


def _add_measure(sub):
    mp = sub.add_parser("_measure", allow_abbrev=False)  # one measurement, in the child process
    mp.add_argument("--config", required=True)
    mp.add_argument("--rnn_mode", required=True, choices=throughput.MODES)
    mp.add_argument("--xla", type=int, choices=(0, 1), default=0)
    mp.add_argument("--warmup", type=int, required=True)
    mp.add_argument("--steps", type=int, required=True)
    mp.add_argument("--eval_steps", type=int, required=True)
    mp.add_argument("--data_path", required=True)
    mp.add_argument("--seed", type=int, default=0)
    mp.add_argument("--override", action="append", default=[])
    mp.add_argument("--stream_eval", action="store_true")
    mp.add_argument("--precision", default=precision.FLOAT32, choices=precision.PRECISIONS)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{throughput,perplexity,ceiling,scaling,profile}")
    _add_throughput(sub)
    _add_perplexity(sub)
    _add_ceiling(sub)
    _add_scaling(sub)
    _add_profile(sub)
    _add_measure(sub)
    _add_scaling_worker(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "perplexity":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "_measure":
        return measure.run(args)  # prints its own error line: the parent reads it
    if args.command == "_scaling_worker":
        try:
            return scaling.measure_worker(args)
        except errors.UserError as e:
            sys.exit(f"error: {e}")  # the parent shows this line
    try:
        if args.command == "throughput":
            return throughput.run(args)
        if args.command == "ceiling":
            return ceiling.run(args)
        if args.command == "scaling":
            return scaling.run(args)
        if args.command == "profile":
            return profile.run(args)
        return perplexity.run(args, [a for a in extra if a != "--"])
    except errors.UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
