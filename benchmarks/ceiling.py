"""The matrix-product ceiling: the words/s of a training step that did nothing but its products.

Times every matrix product of a config's training step (forward and backward,
the shapes fused mode runs) under XLA, each at the faster of its two weight
layouts, and reports the words/s of a step that did nothing else: the bound the
measured words/s are held against.
"""

import dataclasses
import time

import tensorflow as tf

import configs
from benchmarks import common


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product of a training step: [m, k] x [k, n], run `count` times per step."""
    name: str
    m: int
    k: int
    n: int
    count: int
    in_eval: bool  # also run by a forward-only (evaluation) step
    serial: bool  # one per time step, each waiting for the last (the recurrence)

    @property
    def flops(self):
        return 2 * self.m * self.k * self.n * self.count


@dataclasses.dataclass
class ProductSpeed:
    """One product as measured."""
    product: str
    shape: list  # [m, k, n]
    per_step: int
    ms_per_step: float
    gflops: float


@dataclasses.dataclass
class Ceiling:
    """One config's ceiling; error (None when fine) says why it was not measured."""
    config: str
    train_wps: float | None = None
    eval_wps: float | None = None
    mflop_per_word: float | None = None
    products: list = dataclasses.field(default_factory=list)  # of ProductSpeed
    error: str | None = None

    @classmethod
    def from_dict(cls, values):
        """The inverse of dataclasses.asdict (a child's JSON)."""
        products = [ProductSpeed(**row) for row in values.get("products", [])]
        return cls(**dict(values, products=products))


def resolve_config(name, overrides=()):
    """Config `name` with key=value overrides, as the throughput measurements resolve it."""
    return configs.apply_overrides(configs.get_config(name), list(overrides))


def step_products(config):
    """Every matrix product of one training step of `config`, the way fused mode runs it:
    input projections, weight gradients and input gradients over all time steps at once,
    the recurrent products one time step at a time. Elementwise work is not counted."""
    b, h, v, layers = config.batch_size, config.hidden_size, config.vocab_size, config.num_layers
    n, t = b * config.num_steps, config.num_steps
    return [
        Product("LSTM input projection", n, h, 4 * h, layers, True, False),
        Product("LSTM recurrent, per step", b, h, 4 * h, layers * t, True, True),
        Product("softmax", n, h, v, 1, True, False),
        Product("softmax d(weights)", h, n, v, 1, False, False),
        Product("softmax d(outputs)", n, v, h, 1, False, False),
        Product("LSTM recurrent backward, per step", b, 4 * h, h, layers * t, False, True),
        Product("LSTM d(kernel)", 2 * h, n, 4 * h, layers, False, False),
        Product("LSTM d(inputs)", n, 4 * h, h, layers, False, False),
    ]


def _recurrent_input(out, k):
    """A per-step product's output [m, n] -> the next step's input [m, k], from every
    column (so no part of the product can be left out): n = r * k summed over its r
    blocks, or k = r * n tiled r times; through tanh, as h_t comes from the cell."""
    m, n = out.shape
    if n % k == 0:
        return tf.tanh(tf.reduce_sum(tf.reshape(out, [m, n // k, k]), axis=1))
    return tf.tanh(tf.tile(out, [1, k // n]))


def _product_function(product, transposed, chain):
    """An XLA-compiled (a, w) -> a' running `chain` products [m, k] x [k, n] in a row, so
    the call's own cost is spread over them: per-step products each feed the next one
    (_recurrent_input), as h_t feeds step t + 1; the others wait for the last one's
    corner, one cheap pass over a (3% of the small softmax's d(outputs), the worst case).
    With `transposed`, w comes as [n, k], multiplied with its rows contracted (what
    rnn/fused_lstm.py's _per_step_matmul does for large weights)."""

    @tf.function(jit_compile=True)
    def run(a, w):
        for _ in range(chain):
            out = tf.matmul(a, w, transpose_b=transposed)                   # [m, n]
            a = _recurrent_input(out, product.k) if product.serial else a + out[:1, :1]
        return a
    return run


def _chain_length(product):
    """Products per timed call: enough that the call's own cost (~0.3 ms) hardly counts."""
    return 32 if product.serial else 8


def _timed_calls(run, a, w, min_seconds):
    """Seconds per call of run(a, w), over calls for at least min_seconds."""
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        result = run(a, w)
        calls += 1
    result.numpy()  # waits for the last call
    return (time.perf_counter() - start) / calls


def time_products(products, min_seconds=0.3, sweeps=3):
    """Seconds of one of each product: the fastest over `sweeps` sweeps through all of them
    (so a slow spell of a shared machine hits one sweep, not one product) of w as is and
    w transposed, each timed for min_seconds over calls of _chain_length products."""
    runs = []  # (index of the product, compiled chain, a, w)
    for index, product in enumerate(products):
        a = tf.random.uniform([product.m, product.k], -1.0, 1.0)
        for transposed in (False, True):
            shape = [product.n, product.k] if transposed else [product.k, product.n]
            w = tf.random.uniform(shape, -1.0, 1.0) * (2.0 / product.k ** 0.5)
            run = _product_function(product, transposed, _chain_length(product))
            run(a, w).numpy()  # compiles
            runs.append((index, run, a, w))
    best = [float("inf")] * len(products)
    for _ in range(sweeps):
        for index, run, a, w in runs:
            seconds = _timed_calls(run, a, w, min_seconds) / _chain_length(products[index])
            best[index] = min(best[index], seconds)
    return best


def ceiling(config, seconds_per_product):
    """(train, eval) words/s if every product of a step ran at its measured speed and
    nothing else took any time: words per step over the summed product seconds."""
    products = step_products(config)
    words = config.batch_size * config.num_steps
    train = sum(p.count * s for p, s in zip(products, seconds_per_product))
    evaluation = sum(p.count * s for p, s in zip(products, seconds_per_product) if p.in_eval)
    return words / train, words / evaluation


def measure_ceiling(name, overrides=(), min_seconds=0.3, sweeps=3):
    """Config `name`'s ceiling, overrides applied: each product's speed, train and eval words/s."""
    config = resolve_config(name, overrides)
    products = step_products(config)
    seconds = time_products(products, min_seconds, sweeps)
    train_wps, eval_wps = ceiling(config, seconds)
    words = config.batch_size * config.num_steps
    return Ceiling(
        config=name, train_wps=train_wps, eval_wps=eval_wps,
        mflop_per_word=sum(p.flops for p in products) / words / 1e6,
        products=[ProductSpeed(product=p.name, shape=[p.m, p.k, p.n], per_step=p.count,
                               ms_per_step=1e3 * p.count * s, gflops=p.flops / p.count / s / 1e9)
                  for p, s in zip(products, seconds)])


def describe(result):
    """The human-readable line of one ceiling (as throughput --ceiling prints each round's)."""
    if result.error is not None:
        return f"{result.config} ceiling: FAILED ({result.error[:200]})"
    return (f"{result.config} ceiling: train {common.num(result.train_wps)} wps, "
            f"eval {common.num(result.eval_wps)} wps")


def _print_products(result):
    print(f"{result.config}: ceiling {result.train_wps:,.0f} train words/s, "
          f"{result.eval_wps:,.0f} eval words/s "
          f"({result.mflop_per_word:.1f} MFLOP per trained word)", flush=True)
    for row in result.products:
        print(f"  {row.product:34s} {'x'.join(map(str, row.shape)):>17s} "
              f"x{row.per_step:<3d} {row.gflops:6.0f} GFLOPS "
              f"{row.ms_per_step:8.2f} ms/step", flush=True)


def run(args):
    """The `ceiling` command: prints each config's ceiling and its products as measured; the
    last line is JSON.

    Args:
      args: argparse.Namespace with configs, override, min_seconds, sweeps.
    Returns:
      the exit code, 0.
    Raises:
      BenchmarkError, ConfigError: a bad flag value.
    """
    names = common.parse_configs(args.configs)
    for name in names:
        resolve_config(name, args.override)  # ConfigError on a bad override, before any work
    if not args.min_seconds > 0 or args.sweeps < 1:
        raise common.BenchmarkError(f"--min_seconds must be > 0 and --sweeps >= 1, got "
                                    f"{args.min_seconds} and {args.sweeps}")
    results = []
    for name in names:
        results.append(measure_ceiling(name, args.override, args.min_seconds, args.sweeps))
        _print_products(results[-1])
    common.print_summary("ceiling", overrides=args.override,
                         results=[dataclasses.asdict(r) for r in results])
    return 0
