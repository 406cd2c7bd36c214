"""Tests of configs: the tutorial's table, typed overrides, validation."""

import dataclasses

import pytest

import configs


def test_configs_match_tutorial_table():
    # (init_scale, learning_rate, max_grad_norm, num_layers, num_steps, hidden_size,
    #  max_epoch, max_max_epoch, keep_prob, lr_decay, batch_size, vocab_size)
    table = {
        "small": (0.1, 1.0, 5, 2, 20, 200, 4, 13, 1.0, 0.5, 20, 10000),
        "medium": (0.05, 1.0, 5, 2, 35, 650, 6, 39, 0.5, 0.8, 20, 10000),
        "large": (0.04, 1.0, 10, 2, 35, 1500, 14, 55, 0.35, 1 / 1.15, 20, 10000),
        "test": (0.1, 1.0, 1, 1, 2, 2, 1, 1, 1.0, 0.5, 20, 10000),
    }
    for name, row in table.items():
        config = configs.get_config(name)
        assert tuple(getattr(config, f) for f in _TUTORIAL_FIELDS) == pytest.approx(row), name
        # Fields added after the tutorial default to its behaviour.
        assert dataclasses.replace(configs.Config(), **dict(zip(_TUTORIAL_FIELDS, row))) == config


_TUTORIAL_FIELDS = ("init_scale", "learning_rate", "max_grad_norm", "num_layers", "num_steps",
                    "hidden_size", "max_epoch", "max_max_epoch", "keep_prob", "lr_decay",
                    "batch_size", "vocab_size")


def test_config_new_fields_default_to_the_tutorials_model():
    config = configs.Config()
    assert (config.cell, config.tie_embeddings, config.variational_dropout,
            config.recurrent_keep_prob, config.embedding_dropout, config.weight_drop) == (
        "lstm", False, False, 1.0, 1.0, 1.0)


def test_from_dict_of_an_older_checkpoint_without_new_fields():
    old = {k: v for k, v in configs.to_dict(configs.MEDIUM).items() if k in _TUTORIAL_FIELDS}
    assert configs.from_dict(old) == configs.MEDIUM


def test_configs_beyond_the_tutorial_are_diffs_of_it():
    small_tied = configs.get_config("small_tied")
    assert small_tied == dataclasses.replace(configs.SMALL, tie_embeddings=True)
    vd = configs.get_config("medium_tied_vd")
    assert vd.hidden_size == 650 and vd.tie_embeddings and vd.variational_dropout
    assert (vd.keep_prob, vd.recurrent_keep_prob, vd.embedding_dropout) == (0.5, 0.7, 0.7)
    awd = configs.get_config("awd")
    assert (awd.num_layers, awd.hidden_size, awd.num_steps) == (3, 1150, 70)
    assert awd.tie_embeddings and awd.variational_dropout and awd.recurrent_keep_prob == 1.0
    assert (awd.weight_drop, awd.embedding_dropout, awd.keep_prob) == (0.5, 0.9, 0.6)
    assert awd.optimizer == "asgd"
    for name in ("small_tied", "medium_tied_vd", "awd"):
        config = configs.get_config(name)
        assert configs.from_dict(configs.to_dict(config)) == config


@pytest.mark.parametrize("override, field, value", [
    ("tie_embeddings=true", "tie_embeddings", True),
    ("tie_embeddings=False", "tie_embeddings", False),
    ("variational_dropout=1", "variational_dropout", True),
    ("cell=gru", "cell", "gru"),
    ("cell=rnn", "cell", "rnn"),
    ("weight_drop=0.5", "weight_drop", 0.5),
    ("embedding_dropout=0.9", "embedding_dropout", 0.9),
])
def test_apply_overrides_parses_bool_and_str_fields(override, field, value):
    config = configs.apply_overrides(configs.SMALL, [override])
    assert getattr(config, field) == value and type(getattr(config, field)) is type(value)


def test_apply_overrides_parses_with_field_type():
    config = configs.apply_overrides(configs.SMALL, ["num_steps=35", "keep_prob=0.5"])
    assert config.num_steps == 35 and type(config.num_steps) is int
    assert config.keep_prob == 0.5
    assert configs.SMALL.num_steps == 20  # the original is untouched


def test_apply_overrides_rejects_unknown_key_listing_valid_ones():
    with pytest.raises(configs.ConfigError, match=r"unknown config key 'num_step'.*num_steps"):
        configs.apply_overrides(configs.SMALL, ["num_step=3"])


@pytest.mark.parametrize("override, message", [
    ("num_steps=2.5", "expected int"),
    ("keep_prob=high", "expected float"),
    ("num_steps", "not key=value"),
    ("keep_prob=0", r"keep_prob must be in \[1e-06, 1\]"),
    ("keep_prob=1.5", r"keep_prob must be in \[1e-06, 1\]"),
    ("keep_prob=1e-40", r"keep_prob must be in \[1e-06, 1\]"),  # 1 - (1 - p) was 0: a traceback
    ("hidden_size=0", "hidden_size must be > 0"),
    ("batch_size=-3", "batch_size must be > 0"),
    ("learning_rate=-1", "learning_rate must be > 0"),
    ("max_grad_norm=inf", r"max_grad_norm must be > 0 and finite in float32 \(from 1.2e-38 to "
                          r"3.4e38\), got inf"),
    ("learning_rate=1e-50", r"learning_rate must be > 0 and finite in float32"),  # 0 in float32
    ("num_steps=35,tie_embeddings=true", r"expected int; give one key=value per --override, "
                                         r"repeating the flag"),
    ("asgd_nonmono=2", r"asgd_nonmono applies to optimizer=asgd only"),  # did nothing
    ("max_grad_norm=1e39", r"max_grad_norm must be > 0 and finite in float32"),  # inf in float32
    ("lr_decay=1.15", r"lr_decay must be in \(0, 1\]"),
    ("num_layers=1000000", r"num_layers must be at most 100, got 1000000"),
    ("learning_rate=inf", r"learning_rate must be > 0 and finite"),
    ("init_scale=nan", r"init_scale must be > 0 and finite"),
    ("tie_embeddings=maybe", r"tie_embeddings='maybe': expected bool \(true or false\)"),
    ("cell=lstm2", "cell must be one of lstm, gru, rnn, got 'lstm2'"),
    ("weight_drop=0", r"weight_drop must be in \[1e-06, 1\]"),
    ("embedding_dropout=1.1", r"embedding_dropout must be in \[1e-06, 1\]"),
    ("recurrent_keep_prob=0.8", "recurrent_keep_prob=0.8 needs variational_dropout=true"),
])
def test_apply_overrides_rejects_bad_values(override, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.apply_overrides(configs.SMALL, [override])


def test_config_rejects_wrong_type_in_code():
    with pytest.raises(configs.ConfigError, match="num_layers must be int"):
        dataclasses.replace(configs.SMALL, num_layers=2.0)
    with pytest.raises(configs.ConfigError, match="tie_embeddings must be bool"):
        dataclasses.replace(configs.SMALL, tie_embeddings=1)


def test_get_config_unknown_name():
    with pytest.raises(configs.ConfigError, match="unknown model 'huge'; choose one of small"):
        configs.get_config("huge")


def test_dict_round_trip():
    assert configs.from_dict(configs.to_dict(configs.LARGE)) == configs.LARGE
