"""The matrix-product ceiling: the words/s of a training step that did nothing but its products.

Times every matrix product of a config's training step (forward and backward,
the shapes fused mode runs) on every kernel TensorFlow can run it with on this
host: XLA's dot inside a compiled function and TensorFlow's own MatMul op
outside XLA (oneDNN on x86 unless TF_ENABLE_ONEDNN_OPTS=0), each with the
weights as they are and transposed; a per-step product also transposed whole
(out^T = w^T @ a^T, the state carried transposed: the form large weights' backward
loop runs, rnn/fused_lstm.py). The best-kernel ceiling is the words/s of a
step that ran each product on its fastest kernel and did nothing else: the
bound the measured words/s are held against. The XLA ceiling (XLA's dots only)
is kept beside it, and the machine's peak beside both: a large sgemm as
measured, and what the cores, clock and vector units imply.

Beside the products, the softmax loss's own passes over the [words, vocab]
logits are timed (the bias, the loss, and in training the gradients of both)
on the same kernels: work that no step can skip, whatever its products run on. The
ceiling "with the loss" adds them to the products' time, so it shows how much
of a gap to the products-only ceiling the loss alone accounts for.
"""

import dataclasses
import math
import os
import time

import tensorflow as tf

import configs
import host
import model as model_lib
import precision
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


# The ways a product can run: (kernel, form). "xla": XLA's dot in a jit-compiled function;
# "tf": TensorFlow's MatMul op in a plain tf.function (oneDNN or Eigen). Forms: "" w [k, n]
# as it is; "wT" w stored [n, k], its rows contracted; "T" the product transposed,
# out^T [n, m] = w^T [n, k] @ a^T [k, m] (_product_function).
VARIANTS = (("xla", ""), ("xla", "wT"), ("tf", ""), ("tf", "wT"))
# Per-step products only (both the forward and the backward one, though only the backward
# loop runs it, for large weights: rnn/loop_forms.py's LOOP_FORMS): the form of a loop that
# carries its state transposed. With it the ceilings are a little higher than before
# 2026-12-04 08:40 UTC wherever it is the fastest.
SERIAL_VARIANTS = (("xla", "T"),)
# TensorFlow's MatMul on bfloat16 operands (oneDNN): what --precision=bfloat16 runs the
# products over all time steps on (precision.py). Not in the float32 ceilings.
BF16 = ("bf16", "")


def variant_label(kernel, form):
    return f"{kernel} {form}" if form else kernel


@dataclasses.dataclass
class ProductSpeed:
    """One product as measured: at its fastest variant, and at each (GFLOPS by label)."""
    product: str
    shape: list  # [m, k, n]
    per_step: int
    ms_per_step: float
    gflops: float
    fastest: str = "xla"  # variant_label of the fastest
    gflops_by_variant: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class MachinePeak:
    """The machine's own matrix-product peak: a large sgemm as measured, and the nominal one."""
    sgemm_n: int
    sgemm_gflops: float  # [n, n] x [n, n], the faster variant
    sgemm_fastest: str
    nominal_gflops: float | None  # cores x clock x FLOP/cycle, None where the ISA is unknown
    nominal_basis: str  # how nominal_gflops was reckoned


@dataclasses.dataclass
class LossPass:
    """The softmax loss's passes over [words, vocab] logits and the bias at their fastest
    variant: the forward (every step) and the forward with its gradients (training), ms per
    step."""
    shape: list  # [words, vocab]
    forward_ms: float
    forward_fastest: str
    train_ms: float
    train_fastest: str
    ms_by_variant: dict = dataclasses.field(default_factory=dict)  # label -> [forward, train]


@dataclasses.dataclass
class Ceiling:
    """One config's ceilings; error (None when fine) says why they were not measured.

    train_wps/eval_wps are the best-kernel ceiling, xla_train_wps/xla_eval_wps
    the one of XLA's dots alone (this project's ceiling before 2026-12-02).
    """
    config: str
    train_wps: float | None = None
    eval_wps: float | None = None
    mflop_per_word: float | None = None
    products: list = dataclasses.field(default_factory=list)  # of ProductSpeed
    error: str | None = None
    xla_train_wps: float | None = None
    xla_eval_wps: float | None = None
    machine: MachinePeak | None = None
    loss: LossPass | None = None
    # The best-kernel ceiling with the loss's passes added to the products' time.
    train_wps_with_loss: float | None = None
    eval_wps_with_loss: float | None = None
    # The training ceiling of --precision=bfloat16: the products over all time steps also
    # on BF16 where faster (its forward-only passes are float32: eval_wps holds for them).
    bfloat16_train_wps: float | None = None
    bfloat16_train_wps_with_loss: float | None = None

    @classmethod
    def from_dict(cls, values):
        """The inverse of dataclasses.asdict (a child's JSON)."""
        products = [ProductSpeed(**row) for row in values.get("products", [])]
        machine, loss = values.get("machine"), values.get("loss")
        return cls(**dict(values, products=products,
                          machine=MachinePeak(**machine) if machine else None,
                          loss=LossPass(**loss) if loss else None))


def resolve_config(name, overrides=()):
    """Config `name` with key=value overrides, as the throughput measurements resolve it.

    Raises:
      ConfigError: a bad override.
      BenchmarkError: a cell other than the LSTM, whose products step_products counts.
    """
    config = configs.apply_overrides(configs.get_config(name), list(overrides))
    if config.cell != "lstm":
        raise common.BenchmarkError(
            f"the ceiling counts an LSTM's matrix products, not cell={config.cell}'s; measure "
            f"the ceiling of an LSTM config")
    return config


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


def _recurrent_input(out, k, transposed=False):
    """A per-step product's output [m, n] -> the next step's input [m, k], from every
    column (so no part of the product can be left out): n = r * k summed over its r
    blocks, or k = r * n tiled r times; through tanh, as h_t comes from the cell.
    transposed: the same on out^T [n, m] -> [k, m], in that layout (no transpose that XLA
    could fold into the product, as a loop carrying its state transposed has none)."""
    if transposed:
        n, m = out.shape
        if n % k == 0:
            return tf.tanh(tf.reduce_sum(tf.reshape(out, [n // k, k, m]), axis=0))
        return tf.tanh(tf.tile(out, [k // n, 1]))
    m, n = out.shape
    if n % k == 0:
        return tf.tanh(tf.reduce_sum(tf.reshape(out, [m, n // k, k]), axis=1))
    return tf.tanh(tf.tile(out, [1, k // n]))


def _product_function(product, form, chain, kernel="xla"):
    """A compiled (a, w) -> a' running `chain` products [m, k] x [k, n] in a row, so
    the call's own cost is spread over them: per-step products each feed the next one
    (_recurrent_input), as h_t feeds step t + 1; the others wait for the last one's
    corner, one cheap pass over a (3% of the small softmax's d(outputs), the worst case).
    With form "wT", w comes as [n, k], multiplied with its rows contracted (what
    rnn/fused_lstm.py's _per_step_matmul does for large weights); with "T" (per-step
    products), w comes as [n, k] too and every product is out^T = w^T @ a^T, the chain
    carrying a^T [k, m] (transposed once in and out of the call). kernel "xla" compiles
    the function with XLA; "tf" runs TensorFlow's ops, so each product is a MatMul op and
    pays its op's dispatch, as it would in a step."""

    @tf.function(jit_compile=(kernel == "xla"))
    def run(a, w):  # a and w bfloat16 already for BF16, as the step's casts are not products
        if form == "T":
            a_t = tf.transpose(a)                                           # [k, m]
            for _ in range(chain):
                out_t = tf.matmul(w, a_t)                                   # [n, m]
                a_t = _recurrent_input(out_t, product.k, transposed=True)
            return tf.transpose(a_t)
        for _ in range(chain):
            out = tf.matmul(a, w, transpose_b=(form == "wT"))              # [m, n]
            a = _recurrent_input(out, product.k) if product.serial else a + out[:1, :1]
        return a
    return run


def _chain_length(product):
    """Products per timed call: enough that the call's own cost (~0.3 ms) hardly counts."""
    if product.serial:
        return 32
    return 8 if 2 * product.m * product.k * product.n < 1e9 else 1  # 1: over 5 ms each


def _timed_calls(run, *args, min_seconds):
    """Seconds per call of run(*args), over calls for at least min_seconds."""
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        result = run(*args)
        calls += 1
    # Waits for the last call: eager calls on the CPU return when the whole call is done, so
    # one output is enough.
    tf.nest.flatten(result)[0].numpy()
    return (time.perf_counter() - start) / calls


def time_products(products, min_seconds=0.3, sweeps=3, variants=VARIANTS,
                  serial_variants=SERIAL_VARIANTS):
    """Seconds of one of each product on each variant (a per-step product on
    `serial_variants` too): a list (one per product) of dicts
    variant_label -> seconds, each the fastest over `sweeps` sweeps through all of them (so
    a slow spell of a shared machine hits one sweep, not one product), timed for min_seconds
    over calls of _chain_length products."""
    runs = []  # (index of the product, label, compiled chain, a, w)
    for index, product in enumerate(products):
        a = tf.random.uniform([product.m, product.k], -1.0, 1.0)
        for kernel, form in variants + (serial_variants if product.serial else ()):
            shape = [product.n, product.k] if form else [product.k, product.n]
            w = tf.random.uniform(shape, -1.0, 1.0) * (2.0 / product.k ** 0.5)
            dtype = tf.bfloat16 if (kernel, form) == BF16 else tf.float32
            a_in, w = tf.cast(a, dtype), tf.cast(w, dtype)
            run = _product_function(product, form, _chain_length(product), kernel)
            run(a_in, w).numpy()  # traces and compiles
            runs.append((index, variant_label(kernel, form), run, a_in, w))
    best = [{} for _ in products]
    for _ in range(sweeps):
        for index, label, run, a, w in runs:
            seconds = (_timed_calls(run, a, w, min_seconds=min_seconds)
                       / _chain_length(products[index]))
            best[index][label] = min(best[index].get(label, float("inf")), seconds)
    return best


def fastest(seconds_by_variant, kernel=None):
    """(label, seconds) of the fastest variant, of `kernel`'s only if given."""
    return min(((label, s) for label, s in seconds_by_variant.items()
                if kernel is None or label.split()[0] == kernel), key=lambda item: item[1])


def ceiling(config, seconds_per_product, loss_seconds=(0.0, 0.0)):
    """(train, eval) words/s if every product of a step ran at its measured speed and
    nothing else took any time: words per step over the summed product seconds.
    loss_seconds (forward, forward with gradient) adds the loss's passes (eval, train)."""
    products = step_products(config)
    words = config.batch_size * config.num_steps
    train = sum(p.count * s for p, s in zip(products, seconds_per_product)) + loss_seconds[1]
    evaluation = sum(p.count * s for p, s in zip(products, seconds_per_product)
                     if p.in_eval) + loss_seconds[0]
    return words / train, words / evaluation


# The ways the loss can run: (kernel, form). "ours": what the steps run, in evaluation
# and in training (model.biased_word_losses, the bias added inside the loss's passes);
# "stock": tf.nn.sparse_softmax_cross_entropy_with_logits of the biased logits.
LOSS_VARIANTS = (("xla", "ours"), ("tf", "ours"), ("xla", "stock"), ("tf", "stock"))


def _loss_function(kernel, form, train):
    """A (logits [n, v] without the bias, bias [v], targets [n]) -> losses [n] function, or
    with `train` -> (losses, d(sum of losses)/d(logits) [n, v], .../d(bias) [v]) as a step
    needs them, on `kernel` (as _product_function's)."""
    def losses(logits, bias, targets):
        if form == "stock":
            return tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits + bias)
        return model_lib.biased_word_losses(logits, bias, targets)

    @tf.function(jit_compile=(kernel == "xla"))
    def run(logits, bias, targets):
        if not train:
            return losses(logits, bias, targets)
        with tf.GradientTape() as tape:
            tape.watch([logits, bias])
            values = losses(logits, bias, targets)
        return (values,) + tuple(tape.gradient(values, [logits, bias]))
    return run


def _call_cost_function(kernel):
    """What a call of a compiled function costs with the loss's inputs and nothing to do."""
    @tf.function(jit_compile=(kernel == "xla"))
    def run(logits, bias, targets):
        return logits[0, :1] + bias[:1] + tf.cast(targets[:1], logits.dtype)
    return run


def time_loss(words, vocab_size, min_seconds=0.3, sweeps=3):
    """The loss's passes over [words, vocab_size] logits and the bias on every LOSS_VARIANTS:
    a LossPass.

    One pass is one call (a chain would let XLA hoist the max and the sum, which do not
    depend on the targets, out of it), so each kernel's cost of an empty call, timed the
    same way, is taken off (loss_pass).
    """
    logits = tf.random.normal([words, vocab_size], stddev=3.0)
    bias = tf.random.normal([vocab_size], stddev=3.0)
    targets = tf.random.uniform([words], 0, vocab_size, tf.int32)
    runs = [((kernel, kernel if form == "ours" else f"{kernel} stock", train),
             _loss_function(kernel, form, train))
            for kernel, form in LOSS_VARIANTS for train in (False, True)]
    runs += [((kernel, None, None), _call_cost_function(kernel)) for kernel in ("xla", "tf")]
    for _, run in runs:
        tf.nest.flatten(run(logits, bias, targets))[0].numpy()  # traces and compiles
    best = {}
    for _ in range(sweeps):
        for key, run in runs:
            best[key] = min(best.get(key, float("inf")),
                            _timed_calls(run, logits, bias, targets,
                                         min_seconds=min_seconds))
    return loss_pass([words, vocab_size], best)


def loss_pass(shape, seconds):
    """A LossPass from timed calls: seconds[(kernel, label, train)] of each variant's call
    (train False: forward; True: with the gradient) and seconds[(kernel, None, None)] of
    that kernel's empty call, which is taken off each of its variants (never below 0)."""
    ms = {}
    for (kernel, label, train), call in seconds.items():
        if label is not None:
            net = max(call - seconds[(kernel, None, None)], 0.0)
            ms.setdefault(label, [0.0, 0.0])[int(train)] = 1e3 * net
    forward = min(ms, key=lambda label: ms[label][0])
    train = min(ms, key=lambda label: ms[label][1])
    return LossPass(shape=shape, forward_ms=ms[forward][0], forward_fastest=forward,
                    train_ms=ms[train][1], train_fastest=train, ms_by_variant=ms)


def _flop_per_cycle(info):
    """(FLOP per cycle per core of single-precision FMAs, how that was reckoned), or (None, why).

    The FMA units are not in /proc/cpuinfo; they are assumed from the vendor and the
    family: two 256-bit units on AMD Zen 2 to 4 (Zen 4 runs a 512-bit FMA as two halves),
    two 512-bit units on Zen 5 and on Intel's AVX-512 Xeons (Silver and Bronze parts have
    one, so the nominal figure there is twice the truth).
    """
    flags, vendor = info.get("flags", []), info.get("vendor_id", "")
    family = int(info.get("cpu family", "0") or 0)
    if "avx512f" in flags and (vendor != "AuthenticAMD" or family >= 26):
        units, bits, basis = 2, 512, "2 FMA units of 512 bits assumed"
    elif "avx512f" in flags:
        units, bits, basis = 2, 256, "AMD family 25: AVX-512 on 2 FMA units of 256 bits"
    elif "avx2" in flags and "fma" in flags:
        units, bits, basis = 2, 256, "2 FMA units of 256 bits assumed"
    else:
        return None, "no AVX2 with FMA or AVX-512 in /proc/cpuinfo: no nominal peak"
    return 2 * units * bits // 32, basis


def nominal_peak(info=None, cores=None):
    """(GFLOPS, basis): cores x clock x FLOP/cycle, from /proc/cpuinfo; GFLOPS None if unknown.

    The clock is cpuinfo's "cpu MHz" (under a hypervisor the nominal one; boost may be
    higher, so a measured sgemm can exceed this figure)."""
    info = host.cpuinfo() if info is None else info
    cores = len(os.sched_getaffinity(0)) if cores is None else cores
    per_cycle, basis = _flop_per_cycle(info)
    try:
        mhz = float(info["cpu MHz"])
    except (KeyError, ValueError):
        return None, "no cpu MHz in /proc/cpuinfo: no nominal peak"
    if per_cycle is None:
        return None, basis
    return (cores * mhz / 1e3 * per_cycle,
            f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} FLOP/cycle ({basis})")


def measure_machine_peak(n=2048, min_seconds=0.3, sweeps=3):
    """The machine's peak: an [n, n] x [n, n] sgemm on every variant, and the nominal figure."""
    product = Product("sgemm", n, n, n, 1, False, False)
    label, seconds = fastest(time_products([product], min_seconds, sweeps)[0])
    gflops, basis = nominal_peak()
    return MachinePeak(sgemm_n=n, sgemm_gflops=product.flops / seconds / 1e9,
                       sgemm_fastest=label, nominal_gflops=gflops, nominal_basis=basis)


def measure_ceiling(name, overrides=(), min_seconds=0.3, sweeps=3, machine=None):
    """Config `name`'s ceilings, overrides applied: each product's speed on each variant, the
    best-kernel and the XLA train and eval words/s, the training ceiling with the products
    over all time steps also on BF16 (--precision=bfloat16); `machine` is attached."""
    config = resolve_config(name, overrides)
    products = step_products(config)
    measured = time_products(products, min_seconds, sweeps)  # label -> seconds, per product
    whole = [i for i, p in enumerate(products) if not p.serial]  # bfloat16 with the flag
    bfloat16 = precision.onednn_cap_without_bfloat16() is None  # else it would abort
    for i, bf16 in zip(whole, time_products([products[i] for i in whole], min_seconds,
                                            sweeps, (BF16,)) if bfloat16 else ()):
        measured[i].update(bf16)
    float32 = [{label: s for label, s in v.items() if label != variant_label(*BF16)}
               for v in measured]
    best = [fastest(variants) for variants in float32]
    best_seconds = [seconds for _, seconds in best]
    train_wps, eval_wps = ceiling(config, best_seconds)
    xla_train_wps, xla_eval_wps = ceiling(config, [fastest(v, "xla")[1] for v in float32])
    bf16_seconds = [fastest(v)[1] for v in measured]
    words = config.batch_size * config.num_steps
    loss = time_loss(words, config.vocab_size, min_seconds, sweeps)
    loss_seconds = (loss.forward_ms / 1e3, loss.train_ms / 1e3)
    with_loss = ceiling(config, best_seconds, loss_seconds)
    rows = []
    for p, (label, seconds), variants in zip(products, best, measured):
        per_product = p.flops / p.count / 1e9
        rows.append(ProductSpeed(
            product=p.name, shape=[p.m, p.k, p.n], per_step=p.count,
            ms_per_step=1e3 * p.count * seconds, gflops=per_product / seconds, fastest=label,
            gflops_by_variant={v: per_product / s for v, s in variants.items()}))
    return Ceiling(
        config=name, train_wps=train_wps, eval_wps=eval_wps,
        mflop_per_word=sum(p.flops for p in products) / words / 1e6, products=rows,
        xla_train_wps=xla_train_wps, xla_eval_wps=xla_eval_wps, machine=machine, loss=loss,
        train_wps_with_loss=with_loss[0], eval_wps_with_loss=with_loss[1],
        bfloat16_train_wps=ceiling(config, bf16_seconds)[0] if bfloat16 else None,
        bfloat16_train_wps_with_loss=(ceiling(config, bf16_seconds, loss_seconds)[0]
                                      if bfloat16 else None))


def describe(result):
    """The human-readable line of one ceiling (as throughput --ceiling prints each round's)."""
    if result.error is not None:
        return f"{result.config} ceiling: FAILED ({result.error[:200]})"
    return (f"{result.config} ceiling: train {common.num(result.train_wps)} wps, "
            f"eval {common.num(result.eval_wps)} wps (XLA's dots only: train "
            f"{common.num(result.xla_train_wps)}, eval {common.num(result.xla_eval_wps)}; "
            f"with the loss's passes: train {common.num(result.train_wps_with_loss)}, "
            f"eval {common.num(result.eval_wps_with_loss)}; training with bfloat16 "
            f"products: {common.num(result.bfloat16_train_wps)}, with the loss "
            f"{common.num(result.bfloat16_train_wps_with_loss)})")


def describe_machine(machine):
    nominal = (common.DASH if machine.nominal_gflops is None
               else f"{machine.nominal_gflops:,.0f} GFLOPS")
    return (f"machine: sgemm {machine.sgemm_n}^3 {machine.sgemm_gflops:,.0f} GFLOPS "
            f"({machine.sgemm_fastest}); nominal {nominal} = {machine.nominal_basis}")


def _print_products(result):
    print(describe(result) + f" ({result.mflop_per_word:.1f} MFLOP per trained word)",
          flush=True)
    labels = [variant_label(*v) for v in (*VARIANTS, *SERIAL_VARIANTS, BF16)]
    peak = result.machine.sgemm_gflops if result.machine else None
    print(f"  {'product':34s} {'m x k x n':>17s} {'':4s} " + " ".join(f"{x:>7s}" for x in labels)
          + "  GFLOPS; fastest, ms/step" + (", of sgemm" if peak else ""), flush=True)
    for row in result.products:
        cells = " ".join(f"{row.gflops_by_variant[x]:7.0f}" if x in row.gflops_by_variant
                         else f"{common.DASH:>7s}" for x in labels)
        of_peak = f" {row.gflops / peak:4.0%}" if peak else ""
        print(f"  {row.product:34s} {'x'.join(map(str, row.shape)):>17s} x{row.per_step:<3d} "
              f"{cells}  {row.fastest:6s} {row.ms_per_step:8.2f}{of_peak}", flush=True)
    loss = result.loss
    if loss is not None:
        cells = ", ".join(f"{label} {f:.2f} / {t:.2f}"
                          for label, (f, t) in loss.ms_by_variant.items())
        print(f"  softmax loss's passes over {loss.shape[0]}x{loss.shape[1]} logits, ms per step "
              f"forward / with gradient: {cells}; fastest {loss.forward_ms:.2f} "
              f"({loss.forward_fastest}) / {loss.train_ms:.2f} ({loss.train_fastest})",
              flush=True)


def run(args):
    """The `ceiling` command: prints each config's ceiling and its products as measured; the
    last line is JSON.

    Args:
      args: argparse.Namespace with configs, override, min_seconds, sweeps, sgemm_n.
    Returns:
      the exit code, 0.
    Raises:
      BenchmarkError, ConfigError: a bad flag value.
    """
    names = common.parse_configs(args.configs)
    for name in names:
        resolve_config(name, args.override)  # ConfigError on a bad override, before any work
    if not 0 < args.min_seconds < math.inf or args.sweeps < 1 or args.sgemm_n < 0:
        raise common.BenchmarkError(f"--min_seconds must be finite and > 0, --sweeps >= 1 and "
                                    f"--sgemm_n "
                                    f">= 0, got {args.min_seconds}, {args.sweeps} and "
                                    f"{args.sgemm_n}")
    machine = None
    if args.sgemm_n:
        machine = measure_machine_peak(args.sgemm_n, args.min_seconds, args.sweeps)
        print(describe_machine(machine), flush=True)
    results = []
    for name in names:
        results.append(measure_ceiling(name, args.override, args.min_seconds, args.sweeps,
                                       machine))
        _print_products(results[-1])
    common.print_summary("ceiling", overrides=args.override,
                         results=[dataclasses.asdict(r) for r in results])
    return 0
