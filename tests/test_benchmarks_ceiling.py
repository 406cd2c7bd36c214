"""Tests of benchmarks/ceiling.py: the products of a step, the ceiling's arithmetic, the chains."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import configs
from benchmarks import ceiling


@pytest.mark.parametrize("name", ["small", "medium", "large"])
def test_step_products_count_every_flop_of_a_training_step(name):
    # Per trained word, two products of 4H x H per layer forward (input and recurrent),
    # four backward (recurrent, and the kernel gradient's [2H] rows twice) plus the
    # input gradient, i.e. 48 L H^2; the softmax 2HV forward and 4HV backward.
    config = configs.get_config(name)
    h, v, layers = config.hidden_size, config.vocab_size, config.num_layers
    words = config.batch_size * config.num_steps
    products = ceiling.step_products(config)
    assert sum(p.flops for p in products) == words * (48 * layers * h * h + 6 * h * v)
    assert sum(p.flops for p in products if p.in_eval) == words * (16 * layers * h * h + 2 * h * v)


def test_ceiling_is_words_per_step_over_the_summed_product_seconds():
    config = dataclasses.replace(configs.TEST, batch_size=2, num_steps=3, num_layers=1)
    # 1 ms for the first product (input projection, once a step), 2 ms for the second
    # (recurrent, once per time step: 3 times), ... 8 ms for the eighth. Per step:
    # train 1 + 3*2 + 3 + 4 + 5 + 3*6 + 7 + 8 = 52 ms, eval (the first three) 1 + 6 + 3
    # = 10 ms; 2 x 3 = 6 words a step: 6 / 0.052 and 6 / 0.010 words/s.
    seconds = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]
    train, evaluation = ceiling.ceiling(config, seconds)
    assert train == pytest.approx(115.3846, rel=1e-6)
    assert evaluation == pytest.approx(600.0)
    # The loss's passes: 2 ms forward (eval: 12 ms a step), 8 ms with its gradient (60 ms).
    train, evaluation = ceiling.ceiling(config, seconds, (0.002, 0.008))
    assert (train, evaluation) == (pytest.approx(100.0), pytest.approx(500.0))


def test_loss_pass_takes_each_kernels_empty_call_off_and_picks_the_fastest():
    seconds = {("xla", "xla", False): 0.004, ("xla", "xla", True): 0.009,
               ("tf", "tf", False): 0.0035, ("tf", "tf", True): 0.012,
               ("xla", None, None): 0.001, ("tf", None, None): 0.004}
    result = ceiling.loss_pass([4, 5], seconds)
    assert result.ms_by_variant == {"xla": pytest.approx([3.0, 8.0]),
                                    "tf": pytest.approx([0.0, 8.0])}
    # tf's forward is faster than its empty call: it counts as 0, not below.
    assert (result.forward_fastest, result.forward_ms) == ("tf", 0.0)
    assert result.train_fastest == "xla" and result.train_ms == pytest.approx(8.0)


def test_loss_functions_give_the_loss_and_its_gradients_on_every_variant():
    logits = tf.constant([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    bias = tf.constant([0.5, -1.0, 2.0])
    targets = tf.constant([1, 2])
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits + bias).numpy()
    expected_grad = (tf.nn.softmax(logits + bias) - tf.one_hot(targets, 3)).numpy()
    for kernel, form in ceiling.LOSS_VARIANTS:
        forward = ceiling._loss_function(kernel, form, train=False)(logits, bias, targets)
        losses, grad, d_bias = ceiling._loss_function(kernel, form, train=True)(
            logits, bias, targets)
        np.testing.assert_allclose(forward.numpy(), expected, rtol=1e-5)
        np.testing.assert_allclose(losses.numpy(), expected, rtol=1e-5)
        np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d_bias.numpy(), expected_grad.sum(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k, n", [(4, 2), (2, 4)])
def test_product_function_chains_the_product(k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_normal([3, k]).astype(np.float32)
    w = rng.standard_normal([k, n]).astype(np.float32)

    def per_step(x):  # the next input: tanh of every column, tiled or block-summed to k
        out = x @ w
        return np.tanh(np.tile(out, [1, k // n]) if n < k else out.reshape(3, n // k, k).sum(1))

    def other(x):  # the next input: waits for the output's corner only
        return x + (x @ w)[0, 0]

    for serial, step in ((True, per_step), (False, other)):
        product = ceiling.Product("p", 3, k, n, 1, True, serial)
        for kernel, form in ceiling.VARIANTS + (ceiling.SERIAL_VARIANTS if serial else ()):
            w_in = w.T.copy() if form else w  # "wT" and "T" take w stored [n, k]
            run = ceiling._product_function(product, form, 2, kernel)
            np.testing.assert_allclose(run(a, w_in).numpy(), step(step(a)), rtol=1e-5)


def test_fastest_picks_the_quickest_variant_or_the_quickest_of_a_kernel():
    seconds = {"xla": 3.0, "xla wT": 2.0, "tf": 1.0, "tf wT": 4.0, "xla T": 2.5}
    assert ceiling.fastest(seconds) == ("tf", 1.0)
    assert ceiling.fastest(seconds, "xla") == ("xla wT", 2.0)
    assert ceiling.fastest(dict(seconds, **{"xla T": 1.5}), "xla") == ("xla T", 1.5)


def _cpu(vendor, family, flags, mhz="2600.000"):
    return {"vendor_id": vendor, "cpu family": family, "cpu MHz": mhz, "flags": flags.split()}


@pytest.mark.parametrize("info, per_cycle", [
    # AMD Zen 4 (family 25) runs AVX-512 on two 256-bit FMA units: 2 x 2 x 8 lanes.
    (_cpu("AuthenticAMD", "25", "fma avx2 avx512f"), 32),
    # Zen 5 (family 26) and Intel's AVX-512 Xeons: two 512-bit units, 2 x 2 x 16 lanes.
    (_cpu("AuthenticAMD", "26", "fma avx2 avx512f"), 64),
    (_cpu("GenuineIntel", "6", "fma avx2 avx512f avx512_bf16"), 64),
    (_cpu("AuthenticAMD", "23", "fma avx2"), 32),
])
def test_nominal_peak_is_cores_times_clock_times_flop_per_cycle(info, per_cycle):
    gflops, basis = ceiling.nominal_peak(info, cores=2)
    assert gflops == pytest.approx(2 * 2.6 * per_cycle)
    assert basis.startswith(f"2 cores x 2.60 GHz x {per_cycle} FLOP/cycle")


@pytest.mark.parametrize("info", [_cpu("GenuineIntel", "6", "sse4_2 avx"),
                                  {"flags": ["avx2", "fma"]}])
def test_nominal_peak_is_unknown_without_fma_vectors_or_a_clock(info):
    gflops, basis = ceiling.nominal_peak(info, cores=2)
    assert gflops is None and "no nominal peak" in basis


@pytest.mark.parametrize("machine", [None, ceiling.MachinePeak(64, 5.0, "tf", None, "why")])
def test_ceiling_from_dict_reads_what_asdict_wrote(machine):
    result = ceiling.Ceiling("small", 1.0, 2.0, 3.0,
                             [ceiling.ProductSpeed("softmax", [1, 2, 3], 1, 0.5, 9.0, "tf",
                                                   {"tf": 9.0, "xla": 8.0})],
                             xla_train_wps=0.5, xla_eval_wps=1.5, machine=machine,
                             loss=ceiling.LossPass([4, 5], 0.1, "xla", 0.2, "tf",
                                                   {"xla": [0.1, 0.3], "tf": [0.2, 0.2]}),
                             train_wps_with_loss=0.9, eval_wps_with_loss=1.8)
    assert ceiling.Ceiling.from_dict(dataclasses.asdict(result)) == result


@pytest.mark.parametrize("cap", [None, "AVX2"])
def test_measure_ceiling_leaves_bfloat16_out_where_onednn_is_capped_without_it(monkeypatch,
                                                                              cap):
    # Under such a cap oneDNN's bfloat16 MatMul aborts the process (precision.py). The
    # timings are faked: what is asked for is the point.
    asked = []

    def time_products(products, min_seconds, sweeps, variants=ceiling.VARIANTS):
        asked.append(variants)
        return [{ceiling.variant_label(*v): 1e-3 for v in variants} for _ in products]

    monkeypatch.setattr(ceiling, "time_products", time_products)
    monkeypatch.setattr(ceiling, "time_loss", lambda *a: ceiling.LossPass([1, 1], 0.1, "xla",
                                                                           0.2, "xla"))
    monkeypatch.setattr(ceiling.precision, "onednn_cap_without_bfloat16", lambda: cap)
    result = ceiling.measure_ceiling("test", min_seconds=0.001, sweeps=1)
    assert result.train_wps > 0
    with_bf16 = [p for p in result.products if "bf16" in p.gflops_by_variant]
    if cap:
        assert (ceiling.BF16,) not in asked and not with_bf16
        assert result.bfloat16_train_wps is None and result.bfloat16_train_wps_with_loss is None
    else:
        assert (ceiling.BF16,) in asked and with_bf16 and result.bfloat16_train_wps > 0
