"""Model and training hyper-parameters: the tutorial's configs as plain data, plus typed overrides."""

import dataclasses

from errors import UserError


class ConfigError(UserError, ValueError):
    """A config value or override the user gave is invalid; the message says how to fix it."""


CELLS = ("lstm", "gru", "rnn")  # rnn/cells.py's LSTMCell, GRUCell, BasicRNNCell
_KEEP_PROBS = ("keep_prob", "recurrent_keep_prob", "embedding_dropout", "weight_drop")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_POSITIVE = ("init_scale", "learning_rate", "max_grad_norm", "num_layers", "num_steps",
             "hidden_size", "max_epoch", "max_max_epoch", "lr_decay", "batch_size", "asgd_nonmono")
OPTIMIZERS = ("sgd", "asgd")
_FLOAT32_MAX = 3.4028234663852886e38  # the steps compute in float32: a larger value is inf
_FLOAT32_TINY = 1.1754943508222875e-38  # and a smaller positive one 0 (subnormals flushed)
_MIN_KEEP = 1e-6  # below it 1/p, the dropout's scale, overflows as the model computes it
_MAX_LAYERS = 100  # each layer is a cell of its own, traced into every step


def validate(config):
    """Raises ConfigError naming the first field whose value cannot work."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if type(value) is not field.type and not (field.type is float and type(value) is int):
            raise ConfigError(f"config field {field.name} must be {field.type.__name__}, "
                              f"got {value!r}")
    for name in _POSITIVE:  # and finite: an infinite rate or clip norm makes NaN weights
        if not _FLOAT32_TINY <= getattr(config, name) <= _FLOAT32_MAX:
            raise ConfigError(f"config field {name} must be > 0 and finite in float32 (from "
                              f"1.2e-38 to 3.4e38), got {getattr(config, name)!r}")
    if config.lr_decay > 1:
        raise ConfigError(f"config field lr_decay must be in (0, 1] (the LR is multiplied by it "
                          f"each epoch after max_epoch), got {config.lr_decay!r}")
    if config.num_layers > _MAX_LAYERS:
        raise ConfigError(f"config field num_layers must be at most {_MAX_LAYERS}, got "
                          f"{config.num_layers!r}")
    for name in _KEEP_PROBS:
        if not _MIN_KEEP <= getattr(config, name) <= 1.0:
            raise ConfigError(f"config field {name} must be in [{_MIN_KEEP:g}, 1] (1: no "
                              f"dropout), got {getattr(config, name)!r}")
    if config.cell not in CELLS:
        raise ConfigError(f"config field cell must be one of {', '.join(CELLS)}, got "
                          f"{config.cell!r}")
    if config.recurrent_keep_prob < 1.0 and not config.variational_dropout:
        raise ConfigError(f"recurrent_keep_prob={config.recurrent_keep_prob} needs "
                          f"variational_dropout=true (the recurrent h is dropped only with one "
                          f"mask held over the time steps)")
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
    # Beyond the tutorial: each default is the tutorial's model.
    cell: str = "lstm"  # recurrent cell: lstm, gru or rnn (gru and rnn run in rnn_mode basic only)
    # Softmax weights are the embedding's transpose (Press & Wolf 2017; Inan et al. 2017). It
    # needs the last layer's size to equal the embedding's: both are hidden_size here, always.
    tie_embeddings: bool = False
    # keep_prob's masks held over the time steps of a batch, one per sequence row and
    # site (Gal & Ghahramani 2016), instead of a fresh mask every step.
    variational_dropout: bool = False
    # keep probability of the recurrent h_{t-1} before its matmul, one mask per row held
    # over the batch's steps (Gal's p_h); needs variational_dropout. 1.0: h is not dropped.
    recurrent_keep_prob: float = 1.0
    # keep probability of whole embedding rows, one draw per word type per batch, kept
    # rows scaled by 1/keep (Merity et al. 2018, AWD-LSTM). 1.0: off.
    embedding_dropout: float = 1.0
    # keep probability of each weight of every layer's recurrent matrix W_h, one mask
    # per batch (DropConnect; Merity et al. 2018). 1.0: off.
    weight_drop: float = 1.0

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

# Beyond the tutorial: later papers' regularised models as diffs of the tutorial's.

# The small model with tied input and output embeddings (Press & Wolf 2017; Inan et al. 2017):
# one [vocab, hidden] matrix fewer, 2M of its 4.6M parameters.
SMALL_TIED = dataclasses.replace(SMALL, tie_embeddings=True)

# The medium model with Gal & Ghahramani's (2016) variational dropout and tied embeddings
# (Press & Wolf 2017 tie Gal's model too). The keep probabilities are those of Gal's released
# script for the large model (BayesianRNN, main_new_dropout_SOTA.lua: dropout 0.5 on inputs
# and outputs, 0.3 on the recurrent h and on words, found by grid search). Gal draws a
# separate mask per gate and drops a word type per row; here one mask per unit feeds all
# gates and a word type is dropped for the whole batch (as AWD-LSTM does).
MEDIUM_TIED_VD = dataclasses.replace(
    MEDIUM, tie_embeddings=True, variational_dropout=True, keep_prob=0.5,
    recurrent_keep_prob=0.7, embedding_dropout=0.7)

# AWD-LSTM (Merity et al. 2018) in this model's shape: 3 layers, weight drop 0.5 on W_h,
# embedding dropout 0.1, variational dropout, tied embeddings, BPTT 70. What differs: every
# layer and the embedding are hidden_size = 1150 here (AWD: embedding and last layer 400, so
# 43M parameters here against its 24M); one keep_prob (0.6, AWD's 0.4 on the input and the
# output) also between layers, where AWD drops 0.25; no AR/TAR activation penalties; no
# weight decay (AWD's 1.2e-6); every weight matrix and the softmax bias drawn from
# U(-0.1, 0.1), the LSTM biases zero (AWD: PyTorch's U(-1/sqrt(H), 1/sqrt(H)) for the
# LSTMs, their biases included, a zero decoder bias); BPTT a fixed 70 (AWD draws a length
# per batch around 70, its learning rate scaled to it). The learning
# rate stays constant (lr_decay 1.0) as in AWD. AWD's lr 30 and clip 0.25 are for a cost
# averaged over the 70 steps; this cost sums over them, so both scale by 70. NT-ASGD as
# AWD's (optimizer asgd, nonmono 5; the weights at the switch are not in the average).
AWD = dataclasses.replace(
    SMALL, init_scale=0.1, learning_rate=30 / 70, max_grad_norm=0.25 * 70, num_layers=3,
    num_steps=70, hidden_size=1150, max_epoch=500, max_max_epoch=500, keep_prob=0.6,
    lr_decay=1.0, tie_embeddings=True, variational_dropout=True, embedding_dropout=0.9,
    weight_drop=0.5, optimizer="asgd", asgd_nonmono=5)

# Designed for the best test perplexity in 60 minutes of training (--max_minutes=60) on a
# 2-core CPU: the medium model narrowed to 500 units so about 10 epochs fit, tied (Press &
# Wolf 2017) and with variational dropout (Gal & Ghahramani 2016) at keep 0.6 on each layer's
# inputs and outputs (the embedding's output, between the layers, before the softmax; not on
# the recurrent state, and no other dropout: a short run needs less regularisation than 39
# epochs do), and the
# learning rate halved every epoch after the fifth so that it has annealed when time is up.
HOUR = dataclasses.replace(
    MEDIUM, hidden_size=500, max_epoch=5, max_max_epoch=12, keep_prob=0.6, lr_decay=0.5,
    tie_embeddings=True, variational_dropout=True)

CONFIGS = {"small": SMALL, "medium": MEDIUM, "large": LARGE, "test": TEST,
           "small_tied": SMALL_TIED, "medium_tied_vd": MEDIUM_TIED_VD, "awd": AWD,
           "hour": HOUR}


def get_config(name):
    """Returns the named config; ConfigError lists the valid names."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]


def _parse_value(name, field_type, text):
    if field_type is str:
        return text
    if field_type is bool:
        if text.lower() not in _BOOLS:
            raise ConfigError(f"override {name}={text!r}: expected bool (true or false)"
                              f"{_ONE_PER_FLAG if '=' in text else ''}")
        return _BOOLS[text.lower()]
    try:
        if field_type is int:
            return int(text)
        return float(text)
    except ValueError:
        raise ConfigError(f"override {name}={text!r}: expected {field_type.__name__}"
                          f"{_ONE_PER_FLAG if '=' in text else ''}") from None


_ONE_PER_FLAG = "; give one key=value per --override, repeating the flag"


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
    from_command_line = not isinstance(overrides, dict)
    if from_command_line:
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
    config = dataclasses.replace(config, **changes)
    if from_command_line and "asgd_nonmono" in changes and config.optimizer != "asgd":
        raise ConfigError("asgd_nonmono applies to optimizer=asgd only; add "
                          "--override=optimizer=asgd, or leave asgd_nonmono out")
    return config


def to_dict(config):
    return dataclasses.asdict(config)


def from_dict(values):
    """Inverse of to_dict; ConfigError on unknown keys (e.g. a checkpoint of a newer version)."""
    return apply_overrides(SMALL, dict(values))

