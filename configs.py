"""Model and training hyper-parameters: the tutorial's configs as plain data, plus typed overrides."""

import dataclasses

from errors import UserError


class ConfigError(UserError, ValueError):
    """A config value or override the user gave is invalid; the message says how to fix it."""


_POSITIVE = ("init_scale", "learning_rate", "max_grad_norm", "num_layers", "num_steps",
             "hidden_size", "max_epoch", "max_max_epoch", "lr_decay", "batch_size", "asgd_nonmono")
OPTIMIZERS = ("sgd", "asgd")


def validate(config):
    """Raises ConfigError naming the first field whose value cannot work."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if type(value) is not field.type and not (field.type is float and type(value) is int):
            raise ConfigError(f"config field {field.name} must be {field.type.__name__}, "
                              f"got {value!r}")
    for name in _POSITIVE:
        if not getattr(config, name) > 0:
            raise ConfigError(f"config field {name} must be > 0, got {getattr(config, name)!r}")
    if not 0.0 < config.keep_prob <= 1.0:
        raise ConfigError(f"config field keep_prob must be in (0, 1], got {config.keep_prob!r}")
    if config.vocab_size < 2:
        raise ConfigError(f"config field vocab_size must be >= 2, got {config.vocab_size!r}")
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"config field optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                          f"{config.optimizer!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    """One run's hyper-parameters, with the tutorial's names and meanings."""

    init_scale: float = 0.1  # every weight starts uniform in [-init_scale, init_scale]
    learning_rate: float = 1.0  # initial SGD learning rate
    max_grad_norm: float = 5.0  # gradients clipped to this global norm
    num_layers: int = 2  # stacked LSTM layers
    num_steps: int = 20  # unrolled steps of truncated backprop
    hidden_size: int = 200  # LSTM units per layer, also the embedding size
    max_epoch: int = 4  # epochs at the initial learning rate
    max_max_epoch: int = 13  # total epochs; LR decays after max_epoch
    keep_prob: float = 1.0  # dropout keep probability (1.0: no dropout)
    lr_decay: float = 0.5  # LR multiplier per epoch after max_epoch
    batch_size: int = 20  # rows of the batch layout (independent streams)
    vocab_size: int = 10000  # words in the vocabulary
    # After the tutorial: NT-ASGD (Merity et al. 2018, "Regularizing and Optimizing LSTM
    # Language Models"): plain SGD until validation stops improving, then the same SGD
    # steps while an average of the weights since then is kept; evaluation, the best
    # checkpoint and export use the average.
    optimizer: str = "sgd"  # sgd (the tutorial's) or asgd
    asgd_nonmono: int = 5  # asgd: average once validation is worse than the best before the last N

    def __post_init__(self):
        validate(self)


# The paper's "small" (non-regularized) model; the tutorial's test perplexity 115.91.
SMALL = Config()

# The paper's "medium" regularized model; tutorial test perplexity 82.07.
MEDIUM = dataclasses.replace(
    SMALL, init_scale=0.05, num_steps=35, hidden_size=650, max_epoch=6,
    max_max_epoch=39, keep_prob=0.5, lr_decay=0.8)

# The paper's "large" regularized model; tutorial test perplexity 78.29.
LARGE = dataclasses.replace(
    SMALL, init_scale=0.04, max_grad_norm=10.0, num_steps=35, hidden_size=1500,
    max_epoch=14, max_max_epoch=55, keep_prob=0.35, lr_decay=1 / 1.15)

# A tiny model for checking the pipeline end to end in seconds.
TEST = dataclasses.replace(
    SMALL, max_grad_norm=1.0, num_layers=1, num_steps=2, hidden_size=2,
    max_epoch=1, max_max_epoch=1)

CONFIGS = {"small": SMALL, "medium": MEDIUM, "large": LARGE, "test": TEST}


def get_config(name):
    """Returns the named config; ConfigError lists the valid names."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]


def _parse_value(name, field_type, text):
    if field_type is str:
        return text
    try:
        if field_type is int:
            return int(text)
        return float(text)
    except ValueError:
        raise ConfigError(f"override {name}={text!r}: expected {field_type.__name__}") from None


def apply_overrides(config, overrides):
    """Returns config with `overrides` applied, each checked against its field's type.

    Args:
      config: a Config.
      overrides: "key=value" strings (from the command line), or a dict of
        key -> value (strings are parsed with the field's type).
    Raises:
      ConfigError: unknown key (the message lists the valid ones), a value that
        does not parse as the field's type, or a resulting config that is invalid.
    """
    if not isinstance(overrides, dict):
        pairs = {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r} is not key=value, e.g. num_steps=35")
            pairs[key.strip()] = value.strip()
        overrides = pairs
    fields = {f.name: f.type for f in dataclasses.fields(Config)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(fields)}")
        if isinstance(value, str):
            value = _parse_value(key, fields[key], value)
        elif fields[key] is float and type(value) is int:
            value = float(value)
        changes[key] = value
    return dataclasses.replace(config, **changes)


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    """Inverse of to_dict; ConfigError on unknown keys (e.g. a checkpoint of a newer version)."""
    return apply_overrides(SMALL, dict(values))

