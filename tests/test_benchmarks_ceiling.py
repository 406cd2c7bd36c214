"""Tests of benchmarks/ceiling.py: the products of a step, the ceiling's arithmetic, the chains."""

import dataclasses

import numpy as np
import pytest

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
    config = configs.SMALL
    products = ceiling.step_products(config)
    seconds = [0.001 * (i + 1) for i in range(len(products))]
    train, evaluation = ceiling.ceiling(config, seconds)
    words = config.batch_size * config.num_steps
    assert train == pytest.approx(words / sum(p.count * s for p, s in zip(products, seconds)))
    assert evaluation == pytest.approx(
        words / sum(p.count * s for p, s in zip(products, seconds) if p.in_eval))
    assert evaluation > train


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
        for transposed, w_in in ((False, w), (True, w.T.copy())):
            run = ceiling._product_function(product, transposed, 2)
            np.testing.assert_allclose(run(a, w_in).numpy(), step(step(a)), rtol=1e-5)


def test_ceiling_from_dict_reads_what_asdict_wrote():
    result = ceiling.Ceiling("small", 1.0, 2.0, 3.0,
                             [ceiling.ProductSpeed("softmax", [1, 2, 3], 1, 0.5, 9.0)])
    assert ceiling.Ceiling.from_dict(dataclasses.asdict(result)) == result
