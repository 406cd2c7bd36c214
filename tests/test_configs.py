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
    tutorial_fields = ("init_scale", "learning_rate", "max_grad_norm", "num_layers", "num_steps",
                       "hidden_size", "max_epoch", "max_max_epoch", "keep_prob", "lr_decay",
                       "batch_size", "vocab_size")
    for name, row in table.items():
        config = configs.get_config(name)
        assert tuple(getattr(config, f) for f in tutorial_fields) == pytest.approx(row), name
        # Fields added after the tutorial default to its behaviour.
        assert config.optimizer == "sgd", name


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
    ("keep_prob=0", r"keep_prob must be in \(0, 1\]"),
    ("keep_prob=1.5", r"keep_prob must be in \(0, 1\]"),
    ("hidden_size=0", "hidden_size must be > 0"),
    ("batch_size=-3", "batch_size must be > 0"),
    ("learning_rate=-1", "learning_rate must be > 0"),
])
def test_apply_overrides_rejects_bad_values(override, message):
    with pytest.raises(configs.ConfigError, match=message):
        configs.apply_overrides(configs.SMALL, [override])


def test_config_rejects_wrong_type_in_code():
    with pytest.raises(configs.ConfigError, match="num_layers must be int"):
        dataclasses.replace(configs.SMALL, num_layers=2.0)


def test_get_config_unknown_name():
    with pytest.raises(configs.ConfigError, match="unknown model 'huge'; choose one of small"):
        configs.get_config("huge")


def test_dict_round_trip():
    assert configs.from_dict(configs.to_dict(configs.LARGE)) == configs.LARGE
