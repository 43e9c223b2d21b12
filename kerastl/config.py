"""YAML -> typed, validated config.

A config has the sections `source`, `target`, `model` and `train`. Every key is declared
below with its type, default and the values it allows; `load_config` reads a file through
`kerastl.configfile` (strict YAML, `base:` inheritance), applies `--set dotted.key=value`
overrides and validates the result, so
that every mistake is reported before any data is read or any model built, as one
`ConfigError` naming the file, the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from kerastl.configfile import apply_overrides, parse_override, read_yaml  # noqa: F401 (re-exported)
from kerastl.errors import ConfigError

log = logging.getLogger("kerastl")



def default_config_path() -> Path:
    """configs/default.yaml: installed as the `kerastl.configs` package, or in the source tree."""
    try:
        from importlib.resources import files

        path = files("kerastl.configs") / "default.yaml"
        if path.is_file():
            return Path(str(path))
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


@dataclass
class DataConfig:
    """One domain's data (the `source` or the `target` section)."""

    # A folder of class sub-folders, `tfds:NAME`, `syndigits` or `digits`.
    dataset: str = "digits"
    # TFDS `data_dir`; for `tfds:image_folder`, the folder `tfds.ImageFolder` reads.
    data_dir: Optional[str] = None
    # Share of each class held out for validation when the data has no val split (carved
    # deterministically from `seed`).
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 0.9)})
    # Share of each class held out for testing when the data has no test split.
    test_fraction: float = field(default=0.2, metadata={"range": (0.0, 0.9)})
    # Keep only N labelled training examples per class (the few-label case). With an adapt
    # section (target): semi-supervised adaptation, the N per class train with labels and
    # every training image feeds the adaptation loss unlabelled.
    labels_per_class: Optional[int] = field(default=None, metadata={"min": 1})
    # Number of images rendered for `syndigits`.
    num_examples: int = field(default=6000, metadata={"min": 20})
    # Keep decoded, resized images in memory after epoch 1 (or in files in this folder);
    # false decodes them again every epoch.
    cache: Union[bool, str] = True
    # With cache: true, a split whose decoded images (uint8) need more than this many MB is
    # decoded again every epoch instead (shuffled by file name: memory stays flat).
    cache_memory_mb: int = field(default=4096, metadata={"min": 0})
    # Keras preprocessing layers applied to training batches, e.g. {flip: horizontal}.
    augment: dict = field(default_factory=dict)


@dataclass
class ModelConfig:
    # A keras.applications model (`kerastl backbones` lists them), e.g. EfficientNetV2B0.
    backbone: str = "MobileNetV2"
    # `imagenet`, `none`, a weights file, or a previous kerastl run directory.
    weights: str = "none"
    # Square input side in pixels; null takes the backbone's default.
    input_size: Optional[int] = field(default=None, metadata={"min": 16})
    # Extra keyword arguments for the keras.applications constructor (e.g. alpha).
    backbone_args: dict = field(default_factory=dict)
    # Global pooling of the backbone's last feature map.
    pooling: Literal["avg", "max"] = "avg"
    # Units of a Dense + BatchNormalization + ReLU bottleneck after pooling (TLlib uses 256
    # for domain adaptation); its output is the features adaptation aligns. null: none.
    bottleneck: Optional[int] = field(default=None, metadata={"min": 1})
    # Dropout rate before the head's layers.
    dropout: float = field(default=0.2, metadata={"range": (0.0, 0.95)})
    # Units of the head's hidden Dense layers (before the softmax layer), e.g. [256, 256].
    hidden: list[int] = field(default_factory=list)
    # Each hidden layer as Dense -> BatchNormalization -> ReLU (MCD's heads in the paper).
    hidden_bn: bool = False
    # What the second fine-tuning phase trains in the backbone: `all`, `none`, the top N
    # layers (an integer), or every layer from the named one upwards.
    unfreeze: Union[int, str] = "all"
    # BatchNormalization while the backbone is partly or fully trained: `auto` freezes it
    # (inference mode) when fine-tuning pretrained weights and trains it from scratch.
    bn: Literal["auto", "frozen", "train"] = "auto"
    # Momentum of the backbone's BatchNormalization moving averages; null keeps the
    # backbone's own (0.999 for MobileNetV3 / EfficientNet), which is too slow to settle in
    # a short training from scratch.
    bn_momentum: Optional[float] = field(default=None, metadata={"range": (0.0, 1.0)})


@dataclass
class StageConfig:
    """One training stage: `train.pretrain` (on the source) or `train.finetune`."""

    # Phase 1: epochs with the backbone frozen, only the head trains.
    head_epochs: int = field(default=0, metadata={"min": 0})
    # Phase 2: epochs with the backbone unfrozen as `model.unfreeze` says.
    epochs: int = field(default=10, metadata={"min": 0})
    # sgd: Nesterov momentum 0.9. Each phase starts with fresh optimizer state.
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    # Peak learning rate of the head (after warm-up, then cosine decay to 0).
    lr: float = field(default=1e-3, metadata={"positive": True})
    # Phase-2 backbone learning rate = lr * backbone_lr_mult.
    backbone_lr_mult: float = field(default=0.1, metadata={"range": (0.0, 10.0)})
    # Decoupled weight decay; null: none for sgd/adam, Keras' 0.004 for adamw (0 means none).
    weight_decay: Optional[float] = field(default=None, metadata={"range": (0.0, 1.0)})
    # Linear learning-rate warm-up from 0, in epochs (fractions allowed).
    warmup_epochs: float = field(default=0.0, metadata={"min": 0})
    # Label smoothing of the classification loss; 0: plain cross-entropy.
    label_smoothing: float = field(default=0.0, metadata={"range": (0.0, 0.5)})
    # Weight classes by n / (k * n_class) from the training labels.
    class_weights: bool = False


@dataclass
class TrainConfig:
    # Global batch size (summed over replicas).
    batch_size: int = field(default=64, metadata={"min": 1})
    pretrain: StageConfig = field(
        # From scratch on the source, the backbone learns at the head's rate.
        default_factory=lambda: StageConfig(head_epochs=0, epochs=5, backbone_lr_mult=1.0)
    )
    finetune: StageConfig = field(
        default_factory=lambda: StageConfig(head_epochs=5, epochs=10, lr=1e-3)
    )
    # Epoch-end work (validation, checkpoint, history row, progress line) at most this
    # often in steps: shorter epochs of pretrain/finetune are fitted several at a time
    # (a dividing number of them), with the same batches and weights. 1: after every epoch.
    eval_every_steps: int = field(default=20, metadata={"min": 1})
    # Metrics reported per split: top-k accuracy besides top-1.
    top_k: int = field(default=3, metadata={"min": 1})
    # float16/bfloat16 compute with float32 variables (and loss scaling for float16);
    # null trains in float32. Pays off on GPUs/TPUs; on CPUs it is mostly slower.
    mixed_precision: Optional[Literal["mixed_float16", "mixed_bfloat16"]] = None
    # Compile train steps with XLA. For GPUs/TPUs; on CPUs it is mostly slower.
    jit_compile: bool = False
    # TensorFlow's threads inside one op; null: all cores. Small models (tiny images) train
    # fastest with 1, which spares the cost of splitting tiny ops across cores; large ones
    # (ResNet50, EfficientNet at 160+ px) need all cores.
    intra_op_threads: Optional[int] = field(default=None, metadata={"min": 1})
    # TensorFlow's threads running independent ops at once; null: all cores.
    inter_op_threads: Optional[int] = field(default=None, metadata={"min": 1})
    # A head-only phase (backbone frozen, its BN in inference mode) on images without
    # augmentation computes the backbone's features once and trains the head on them:
    # the same training, without running the backbone every epoch. false: always images.
    cache_features: bool = True
    # Re-estimate the statistics of the BatchNormalization layers that fine-tuning trained, as
    # averages over the target's training images, after training (precise BN). auto: when
    # the run was too short for their moving averages (momentum ** steps above 5%) to forget
    # their starting values, which would otherwise make every prediction alike.
    precise_bn: Literal["auto", "always", "never"] = "auto"
    # Write report.html (one self-contained page of the run) at the end; `kerastl report
    # RUN` writes it any time later.
    report: bool = True


@dataclass
class DistributeConfig:
    """Where training runs: TensorFlow's tf.distribute strategies."""

    # auto: mirrored on several GPUs, else default. multi_worker reads TF_CONFIG; tpu
    # connects to `tpu` (a name or grpc:// address; empty on a Cloud TPU VM).
    strategy: Literal["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"] = "auto"
    # Devices for mirrored / one_device, e.g. ["/gpu:0", "/gpu:1"]; null: all GPUs (or the CPU).
    devices: Optional[list[str]] = None
    # Split the CPU into N logical devices, to try mirrored training without GPUs.
    cpu_devices: Optional[int] = field(default=None, metadata={"min": 1})
    # With several replicas, BatchNormalization uses the statistics of the global batch
    # (as on one device) instead of each replica's share.
    sync_batchnorm: bool = True
    # TPU name or grpc:// address for strategy: tpu (empty on a Cloud TPU VM).
    tpu: Optional[str] = None


DEFAULT_ADAPT_EPOCHS = 10


@dataclass
class AdaptConfig:
    """Unsupervised domain adaptation (replaces pretrain + finetune when present)."""

    # One of `kerastl methods` (each declared at the top of its module in kerastl/adaptation/).
    method: str = "dann"
    # loss = source classification loss + weight x adaptation loss.
    weight: float = field(default=1.0, metadata={"range": (0.0, 100.0)})
    # The weight grows from 0 to `weight` as 2 / (1 + exp(-10 p)) - 1 over the run's progress
    # p (the progressive schedule of the DANN, JAN and CDAN papers), so the adaptation loss
    # acts once the classifier has learned the source. DANN, CDAN and MDD ramp their
    # gradient reversal this way already; this ramps the loss itself, for losses on the
    # target's own predictions (MCC, entropy terms) that would otherwise sort target images
    # into classes before the classifier knows them.
    weight_ramp: bool = False
    # Label smoothing of the classification loss on labelled images (SHOT trains its source
    # model with 0.1 to make it transfer better); 0: plain cross-entropy. Validation losses
    # stay plain cross-entropy.
    label_smoothing: float = field(default=0.0, metadata={"range": (0.0, 0.5)})
    # The budget in epochs; null: DEFAULT_ADAPT_EPOCHS, or `steps` when that is given (give
    # one of the two).
    epochs: Optional[int] = field(default=None, metadata={"min": 1})
    # Steps per epoch (each epoch ends with a source validation pass); null: one pass over
    # the larger domain at half a batch per domain.
    steps_per_epoch: Optional[int] = field(default=None, metadata={"min": 1})
    # The budget in training steps instead of epochs: whole epochs of about steps_per_epoch
    # steps each, as many as make `steps` (the total may be a few steps lower); null: epochs.
    # Setting both is an error: one budget, one key.
    steps: Optional[int] = field(default=None, metadata={"min": 1})
    # sgd: Nesterov momentum 0.9 (the DANN papers' and TLlib's choice).
    optimizer: Literal["sgd", "adam"] = "sgd"
    # Learning rate of the head and, times backbone_lr_mult, of the backbone.
    lr: float = field(default=0.01, metadata={"positive": True})
    # The backbone's learning rate is lr x this (TLlib uses 0.1 for pretrained backbones).
    backbone_lr_mult: float = field(default=1.0, metadata={"min": 0})
    # Decoupled weight decay of every trained variable; null or 0: none.
    weight_decay: Optional[float] = field(default=None, metadata={"min": 0})
    # Ganin & Lempitsky's annealing lr_p = lr / (1 + alpha p)^beta, p = training progress
    # (training steps done / all training steps, however many updates a method makes per step).
    anneal: bool = True
    # alpha of the annealing above.
    anneal_alpha: float = field(default=10.0, metadata={"min": 0})
    # beta of the annealing above.
    anneal_beta: float = field(default=0.75, metadata={"min": 0})
    # How target images meet BatchNormalization while training, the same for every method:
    # `joint` (one pass over source + target), `separate` (a pass per domain) or `source`
    # (the target in inference mode: BN statistics of the source only).
    bn_protocol: Literal["joint", "separate", "source"] = "joint"
    # Which epoch's model is kept, chosen without target labels: the best source
    # validation accuracy (the last epoch when the source has no validation split), the
    # best label-free validator on held-back target images (entropy, im = information
    # maximization, bnm, snd = soft neighbourhood density, dev = deep embedded validation;
    # every run records all of them per epoch), or simply the last epoch. `auto`: im when
    # the run has held-back target images and a source validation split (closest to the
    # best epoch in every benchmark table), else source_val, else the last epoch.
    selection: Literal["auto", "source_val", "entropy", "im", "bnm", "snd", "dev", "last"] = "auto"
    # The method's own hyper-parameters (see `kerastl methods`), e.g. {max_lambda: 0.3}.
    params: dict = field(default_factory=dict)


@dataclass
class Config:
    # The run's name: its directory is saved_models/<name>-<timestamp> unless --out says.
    name: str = "run"
    # Seeds everything random: splits, initial weights, batch order, augmentation, dropout.
    seed: int = 0
    source: Optional[DataConfig] = None
    target: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: Optional[AdaptConfig] = None
    distribute: DistributeConfig = field(default_factory=DistributeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------
# Validation


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


class _Invalid(Exception):
    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(key)
        self.key, self.value, self.allowed = key, value, allowed


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Invalid(key, value, "a mapping")
        return _build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Invalid(key, value, _type_name(tp))
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except _Invalid as err:
                if err.key != key:  # an error inside a nested mapping is the real one
                    raise
        raise _Invalid(key, value, _type_name(tp))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _Invalid(key, value, "one of " + _type_name(tp))
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise _Invalid(key, value, _type_name(tp))
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(key, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(key, value, "a string")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise _Invalid(key, value, "a mapping")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def _check_bounds(f: dataclasses.Field, value: Any, key: str):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    meta = f.metadata
    if "min" in meta and value < meta["min"]:
        raise _Invalid(key, value, f"a value >= {meta['min']}")
    if meta.get("positive") and not value > 0:
        raise _Invalid(key, value, "a value > 0")
    if "range" in meta:
        lo, hi = meta["range"]
        if not lo <= value <= hi:
            raise _Invalid(key, value, f"a value between {lo} and {hi}")


def _build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise _Invalid(key, value, f"{hint}keys here are: {', '.join(fields)}")
        converted = _convert(value, hints[name], key)
        _check_bounds(fields[name], converted, key)
        kwargs[name] = converted
    # Nested sections given partially keep their own defaults for the rest; a section
    # whose default is a factory (e.g. train.finetune) merges over that default.
    for name, f in fields.items():
        if name in kwargs and dataclasses.is_dataclass(kwargs[name]):
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
                if dataclasses.is_dataclass(default):
                    given = data[name] or {}
                    kwargs[name] = dataclasses.replace(
                        default,
                        **{k: getattr(kwargs[name], k) for k in given},
                    )
    return cls(**kwargs)


def _cross_checks(cfg: Config):
    """Constraints between keys."""
    for section in ("source", "target"):
        data = getattr(cfg, section)
        if data is None:
            continue
        if data.val_fraction + data.test_fraction >= 1.0:
            raise _Invalid(
                f"{section}.test_fraction",
                data.test_fraction,
                f"val_fraction + test_fraction < 1 (val_fraction is {data.val_fraction})",
            )
        if not data.dataset:
            raise _Invalid(f"{section}.dataset", data.dataset, "a non-empty name or path")
    for stage in ("pretrain", "finetune"):
        st = getattr(cfg.train, stage)
        if st.warmup_epochs > st.head_epochs + st.epochs:
            raise _Invalid(
                f"train.{stage}.warmup_epochs",
                st.warmup_epochs,
                f"at most head_epochs + epochs ({st.head_epochs + st.epochs})",
            )
    if cfg.adapt is None and cfg.train.finetune.head_epochs + cfg.train.finetune.epochs == 0:
        raise _Invalid(
            "train.finetune.epochs", 0, "at least one epoch of head_epochs + epochs"
        )
    if cfg.adapt is not None:
        from kerastl.adaptation.catalog import CATALOG  # no TensorFlow: validating stays fast

        if cfg.adapt.method not in CATALOG:
            raise _Invalid("adapt.method", cfg.adapt.method, "one of " + ", ".join(CATALOG.names()))
        cfg.adapt.method = CATALOG.canonical(cfg.adapt.method)
        if cfg.source is None:
            raise _Invalid("source", None, "a labelled source domain: adaptation needs one")
        _method_params(cfg.adapt.method, cfg.adapt.params)
        if cfg.train.batch_size < 2:
            raise _Invalid("train.batch_size", cfg.train.batch_size, "at least 2 (half source, half target)")
        if cfg.adapt.epochs is not None and cfg.adapt.steps is not None:
            raise _Invalid("adapt.epochs", cfg.adapt.epochs,
                           f"null while adapt.steps is set ({cfg.adapt.steps}): the budget is one or the "
                           "other (e.g. --set adapt.steps=null to count epochs)")
    dist = cfg.distribute
    if dist.cpu_devices is not None and dist.strategy in ("multi_worker", "tpu"):
        raise _Invalid("distribute.cpu_devices", dist.cpu_devices,
                       "null with strategy " + dist.strategy + " (it splits this process's CPU for "
                       "mirrored, one_device, default or auto)")
    if dist.devices is not None and dist.strategy not in ("mirrored", "one_device"):
        raise _Invalid("distribute.devices", dist.devices, "only with strategy mirrored or one_device")
    if dist.strategy == "one_device" and dist.devices is not None and len(dist.devices) != 1:
        raise _Invalid("distribute.devices", dist.devices, "exactly one device for one_device")
    if isinstance(cfg.model.unfreeze, int) and cfg.model.unfreeze < 0:
        raise _Invalid("model.unfreeze", cfg.model.unfreeze, "'all', 'none', N >= 0 or a layer name")


# --------------------------------------------------------------------------------------
# Loading and overrides


def _method_params(method: str, params: dict) -> dict:
    """A method's full hyper-parameters (catalog defaults + `params`), or _Invalid."""
    from kerastl.adaptation.catalog import CATALOG, ParamError

    try:
        return CATALOG.get(method).validated(params)
    except ParamError as err:
        raise _Invalid(f"adapt.params.{err.key}", err.value, err.allowed) from None


def _warn_unused(data: dict, origin: str):
    """Keys that are valid on their own but unused with the others given: said, not ignored."""
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if data.get("adapt") is not None:
        unused = [f"train.{stage}" for stage in ("pretrain", "finetune") if train.get(stage) is not None]
        if unused:
            log.warning("%s: %s not used: with an adapt section, adaptation replaces pretraining and "
                        "fine-tuning (its schedule is adapt.epochs, adapt.lr, adapt.optimizer)",
                        origin, " and ".join(unused) + (" are" if len(unused) > 1 else " is"))


def config_from_dict(data: dict, origin: str = "<config>") -> Config:
    try:
        cfg = _build(Config, data)
        _cross_checks(cfg)
    except _Invalid as err:
        raise ConfigError(
            f"{origin}: {err.key}: {err.value!r} is not allowed; expected {err.allowed}"
        ) from None
    _warn_unused(data, origin)
    return cfg


def load_config(path: Optional[Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Reads, overrides and validates a config. `path=None` reads the default config."""
    path = Path(path) if path is not None else default_config_path()
    data = apply_overrides(read_yaml(path), list(overrides))
    origin = str(path) + (" (with --set overrides)" if overrides else "")
    return config_from_dict(data, origin)


def dump_config(cfg: Config) -> str:
    data = cfg.to_dict()
    if cfg.adapt is not None:  # unused with adaptation (see _warn_unused): not written as if in force
        for stage in ("pretrain", "finetune"):
            data["train"].pop(stage)
    return yaml.safe_dump(data, sort_keys=False)
