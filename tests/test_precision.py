"""Tests of precision.py and the bfloat16 training step: checks, products, model, step."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import configs
import model as model_lib
import precision
import reader
import run
import training
from rnn import cells, fused_lstm

CONFIG = dataclasses.replace(configs.TEST, vocab_size=12, hidden_size=32, num_layers=2,
                             num_steps=6, batch_size=4, keep_prob=0.9, max_grad_norm=5.0)
BF16_EPS = 2.0 ** -8  # bfloat16 keeps 8 significant bits


def _random(shape, seed, scale=1.0):
    return tf.constant(scale * np.random.default_rng(seed).normal(size=shape), tf.float32)


@pytest.mark.parametrize("args, message", [
    (("float16", "fused", True), r"unknown precision 'float16'; choose one of float32, bfloat16"),
    (("bfloat16", "basic", True), r"--precision=bfloat16 runs only with --rnn_mode=fused"),
    (("bfloat16", "fused", False), r"compiles fused mode's loops with XLA; drop --xla=0"),
    (("bfloat16", "fused", True, "mirrored"), r"one device only for now, not with strategy "
                                              r"mirrored; train on one device"),
])
def test_check_refuses_what_cannot_run(args, message):
    with pytest.raises(precision.PrecisionError, match=message):
        precision.check(*args)


@pytest.mark.parametrize("rnn_mode", ["basic", "fused", "block"])
def test_check_lets_float32_run_with_anything(rnn_mode):
    precision.check("float32", rnn_mode, False, "mirrored")
    precision.check("bfloat16", "fused", True, "none")


def test_run_options_refuse_what_bfloat16_cannot_run_before_any_work():
    with pytest.raises(precision.PrecisionError, match="drop --xla=0"):
        run.RunOptions(rnn_mode="fused", xla=False, precision="bfloat16")
    with pytest.raises(precision.PrecisionError, match="not with strategy mirrored"):
        run.RunOptions(precision="bfloat16", strategy="mirrored", num_cpu_replicas=2)
    assert run.RunOptions(precision="bfloat16").precision == "bfloat16"  # auto: fused, XLA


def test_native_bfloat16_reads_the_cpu_flags():
    assert precision.native_bfloat16(["avx2", "avx512f", "avx512_bf16"]) == "avx512_bf16"
    assert precision.native_bfloat16(["amx_tile", "amx_bf16"]) == "amx_bf16"
    assert precision.native_bfloat16(["avx2", "fma"]) is None
    assert precision.describe("float32") == "float32"
    assert precision.describe("bfloat16", ["avx512_bf16"]).endswith("on oneDNN with avx512_bf16)")
    assert "no bfloat16 instructions found" in precision.describe("bfloat16", ["avx2"])


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False),
                                                      (False, True)])
def test_matmul_is_the_product_of_the_rounded_operands_rounded(transpose_a, transpose_b):
    a = _random([24, 16] if transpose_a else [16, 24], 0)
    b = _random([40, 24] if transpose_b else [24, 40], 1)
    got = precision.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert got.dtype == tf.float32
    rounded = [tf.cast(tf.cast(m, tf.bfloat16), tf.float64) for m in (a, b)]
    exact = tf.matmul(*rounded, transpose_a=transpose_a, transpose_b=transpose_b).numpy()
    # float32 accumulation of 24 terms, then one rounding to 8 significant bits.
    scale = np.abs(exact).max()
    np.testing.assert_allclose(got.numpy(), exact, rtol=BF16_EPS, atol=1e-5 * scale)
    assert not np.array_equal(got.numpy(), tf.matmul(a, b, transpose_a=transpose_a,
                                                     transpose_b=transpose_b).numpy())


def _lstm_and_sequence():
    cell = cells.LSTMCell(16, 12, forget_bias=0.0, name="lstm")
    state = cells.LSTMStateTuple(_random([3, 16], 2), _random([3, 16], 3))
    return cell, _random([5, 3, 12], 4), state


def _outputs_and_gradients(cell, inputs, state, **kwargs):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs, final = fused_lstm.fused_lstm(cell, inputs, state, **kwargs)
        loss = tf.reduce_sum(outputs * _random(outputs.shape, 5)) + tf.reduce_sum(final.c)
    return [outputs, final.c] + tape.gradient(loss, [inputs, cell.kernel, cell.bias])


def test_fused_lstm_with_compiled_loops_is_the_plain_one():
    # The loops as XLA programs of their own (what the bfloat16 step runs), float32
    # products: the same outputs and gradients, the state's and a recurrent mask's too.
    cell, inputs, state = _lstm_and_sequence()
    mask = tf.cast(_random([3, 16], 6) > 0, tf.float32) * 2.0

    def run(**kwargs):
        with tf.GradientTape() as tape:
            tape.watch([inputs, state.c, state.h])
            outputs, final = fused_lstm.fused_lstm(cell, inputs, state, recurrent_mask=mask,
                                                   **kwargs)
            loss = tf.reduce_sum(outputs * _random(outputs.shape, 5)) + tf.reduce_sum(final.c)
        return [outputs, final.c, final.h] + tape.gradient(
            loss, [inputs, state.c, state.h, cell.kernel, cell.bias])
    for got, want in zip(run(compile_loops=True), run()):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_fused_lstm_with_bfloat16_products_and_compiled_loops_is_near_float32():
    cell, inputs, state = _lstm_and_sequence()
    want = _outputs_and_gradients(cell, inputs, state)
    got = _outputs_and_gradients(cell, inputs, state, matmul=precision.matmul,
                                 compile_loops=True)
    for g, w in zip(got, want):
        assert not np.array_equal(g.numpy(), w.numpy())  # the products did change
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0,
                                   atol=8 * BF16_EPS * np.abs(w.numpy()).max())


def _models():
    return [model_lib.PTBModel.from_config(CONFIG, rnn_mode="fused", seed=3, precision=p)
            for p in ("float32", "bfloat16")]


def test_model_trains_in_bfloat16_but_evaluates_in_float32():
    f32, bf16 = _models()
    x = tf.constant(np.arange(24).reshape(4, 6) % 12, tf.int32)
    state = f32.zero_state(4)
    np.testing.assert_array_equal(bf16(x, state)[0].numpy(), f32(x, state)[0].numpy())
    masks = f32.dropout_masks(tf.constant([1, 2], tf.int64), 4, 6)
    got = bf16(x, state, training=True, keep_masks=masks)[0].numpy()
    want = f32(x, state, training=True, keep_masks=masks)[0].numpy()
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=8 * BF16_EPS * np.abs(want).max())


def test_the_start_up_line_says_where_bfloat16_products_run():
    assert precision.describe("bfloat16", ["avx512_bf16"], {}) == (
        "bfloat16 (the large products, on oneDNN with avx512_bf16)")
    assert "oneDNN is off, TF_ENABLE_ONEDNN_OPTS=0" in precision.describe(
        "bfloat16", ["avx512_bf16"], {"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert precision.describe("float32", [], {"TF_ENABLE_ONEDNN_OPTS": "0"}) == "float32"


def test_auto_choosing_another_kernel_says_why_bfloat16_cannot_run():
    with pytest.raises(precision.PrecisionError, match=r"not basic \(--rnn_mode=auto's choice "
                                                       r"for cell=gru\)$"):
        precision.check("bfloat16", "basic", True, chosen_by_auto_for="cell=gru")


def test_model_refuses_bfloat16_for_a_kernel_that_cannot_run_it():
    with pytest.raises(precision.PrecisionError, match="runs only with --rnn_mode=fused"):
        model_lib.PTBModel.from_config(CONFIG, rnn_mode="basic", precision="bfloat16")


def _stream(length=2000, seed=0):
    rng = np.random.RandomState(seed)
    return (np.cumsum(rng.choice([1, 1, 1, 2], size=length)) % 12).astype(np.int32)


def test_bfloat16_training_follows_the_float32_one_and_learns():
    config = dataclasses.replace(CONFIG, keep_prob=1.0, max_epoch=5)  # LR stays 1.0
    batches = reader.ptb_producer(_stream(), config.batch_size, config.num_steps)
    perplexities = {}
    for p in ("float32", "bfloat16"):
        ts = training.TrainState(config, rnn_mode="fused", seed=3, precision=p)
        step = training.make_train_step(ts, jit_compile=True)
        perplexities[p] = []
        for epoch in range(3):
            ts.reset_epoch(epoch)
            assert training.run_epoch(ts, step, batches)
            perplexities[p].append(ts.epoch_perplexity())
    f32, bf16 = perplexities["float32"], perplexities["bfloat16"]
    assert bf16[-1] < 0.6 * bf16[0], bf16  # it learns
    np.testing.assert_allclose(bf16, f32, rtol=0.05)  # along the float32 run's path


def test_onednn_capped_below_avx512_core_leaves_no_bfloat16_and_check_refuses(monkeypatch):
    avx512 = ("avx2", "avx512f")
    capped = {"ONEDNN_MAX_CPU_ISA": "avx2"}
    assert precision.onednn_cap_without_bfloat16(capped, avx512) == "avx2"
    for environ, flags in [({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, avx512), ({}, avx512),
                           (dict(capped, TF_ENABLE_ONEDNN_OPTS="0"), avx512),  # Eigen's then
                           (capped, ("avx2",))]:  # no avx512f: TensorFlow keeps it off oneDNN
        assert precision.onednn_cap_without_bfloat16(environ, flags) is None, (environ, flags)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(precision.host, "cpu_flags", lambda: avx512)
    with pytest.raises(precision.PrecisionError, match=r"ONEDNN_MAX_CPU_ISA=AVX2 leaves "
                                                       r"without bfloat16 .*unset"):
        precision.check("bfloat16", "fused")
    precision.check("float32", "fused")


def test_run_options_refuse_bfloat16_under_tf_config_before_joining(monkeypatch):
    # strategy auto with TF_CONFIG is multi_worker: refused before any worker joins.
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}}')
    with pytest.raises(precision.PrecisionError, match="not with strategy multi_worker"):
        run.RunOptions(precision="bfloat16", strategy="auto")
