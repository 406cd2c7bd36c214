"""Tests of benchmarks/measure.py: the timed loops run the library's steps on the right batches."""

import dataclasses

import numpy as np

import configs
import reader
import training
from benchmarks import measure


def _tiny_state(batch_size=2, num_steps=3):
    config = dataclasses.replace(configs.TEST, vocab_size=10, batch_size=batch_size,
                                 num_steps=num_steps)
    ts = training.TrainState(config, rnn_mode="basic")
    ts.reset_epoch(0)
    ids = np.arange(20, dtype=np.int32) % 10  # batch_len 10 -> epoch_size 3
    return ts, reader.ptb_producer(ids, batch_size, num_steps)


def test_time_training_runs_warmup_plus_steps_going_round_a_short_split():
    ts, batches = _tiny_state()
    seconds = measure.time_training(ts, batches, warmup=2, steps=5, jit_compile=False)
    assert seconds > 0
    assert int(ts.global_step.numpy()) == 7
    assert int(ts.epoch.numpy()) == 2 and int(ts.step.numpy()) == 1  # 3 + 3 + 1 steps


def test_time_evaluation_goes_round_a_short_split(monkeypatch):
    seen = []  # the first id of every batch an eval step was given
    make_eval_step = training.make_eval_step

    def counting_make_eval_step(*args, **kwargs):
        eval_step = make_eval_step(*args, **kwargs)

        def step(x, y, state):
            seen.append(int(x[0, 0]))
            return eval_step(x, y, state)
        return step
    monkeypatch.setattr(training, "make_eval_step", counting_make_eval_step)
    ts, batches = _tiny_state()
    assert measure.time_evaluation(ts.model, batches, warmup=1, steps=7) > 0
    # Row 0 of the layout is ids 0..9, so batch i starts at id 3 i: batches 0, 1, 2 of the
    # three-batch split, then round again, 1 + 7 = 8 steps in all.
    assert seen == [0, 3, 6, 0, 3, 6, 0, 3]


def test_a_mode_labels_auto_by_the_kernel_it_ran_and_keeps_its_precision():
    assert measure.Mode("auto", True, precision="bfloat16").label_as_run("fused") == \
        "auto(fused)+xla+bfloat16"
    assert measure.Mode("fused", True).label_as_run("fused") == "fused+xla"
