"""YAML -> typed, validated config.

A config has the sections `source`, `target`, `model` and `train`. Every key is declared
below with its type, default and the values it allows; `load_config` reads a file through
`kerastl.configfile` (strict YAML, `base:` inheritance), applies `--set dotted.key=value`
overrides and validates the result (`kerastl.configcheck`), so that every mistake is
reported before any data is read or any model built, as one `ConfigError` naming the file,
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import yaml

from kerastl.configcheck import Invalid, build, cross_checks, warn_unused
from kerastl.configfile import apply_overrides, read_yaml
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

    # A folder of class sub-folders, `tfds:NAME`, or a built-in domain: `syndigits`, `digits`,
    # `digits-m`, `syndigits-lowres`. A folder of images without sub-folders has no labels: it
    # can only be the target of adaptation.
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
    # Keep only these classes (their names, as labels.txt spells them), numbered in this
    # order; null keeps every class. A target with fewer classes than its source is a partial
    # transfer: its classes are found among the source's by name.
    classes: Optional[list[str]] = None
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
    # When the target's classes are some of the source's (a partial transfer): the classes
    # the saved model outputs and the target is evaluated on. `target`: the target's own
    # (the source's probabilities for them, renormalized); `source`: every source class.
    partial_outputs: Literal["target", "source"] = "target"


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
    # Exponential moving average of the trained weights (Keras' optimizer `use_ema`, timm's
    # --model-ema): each phase ends with the average in place of its last weights, so the
    # evaluated, saved and exported model is the average. The momentum, e.g. 0.99 averages
    # about the last 100 steps; null: no average. Validation during the phase sees the
    # weights as trained, the final evaluation the average.
    ema: Optional[float] = field(default=None, metadata={"range": (0.0, 0.99999), "positive": True})
    # Layer-wise learning-rate decay of the backbone (BEiT, timm's --layer-decay): block b of
    # the backbone's B blocks, counted from the input as keras.applications names them
    # (kerastl/models/blocks.py), learns at the backbone's rate x layer_decay ** (B - b):
    # the stem least, the last block at the backbone's rate. null: one backbone rate.
    layer_decay: Optional[float] = field(default=None, metadata={"range": (0.0, 1.0), "positive": True})
    # L2-SP (Li et al., 2018): adds l2_sp / 2 x sum ||w - w0||^2 over the backbone's trained
    # weights, w0 the ones the stage started from (pretrained on the source, ImageNet's or a
    # weights file): fine-tuning stays near what the backbone knew. 0: off; TLlib uses 0.01.
    l2_sp: float = field(default=0.0, metadata={"range": (0.0, 100.0)})
    # Batch spectral shrinkage (Chen et al., 2019): adds bss x the sum of the squares of the
    # smallest singular value(s) of each batch's feature matrix, which carry what the source
    # taught that does not transfer. 0: off; the paper and TLlib use 0.001.
    bss: float = field(default=0.0, metadata={"range": (0.0, 10.0)})


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
    # Seeds only the data: which images fall in each split (and which are labelled, with
    # labels_per_class). null: `seed`. A sweep fixes it so that every trial is scored and
    # tested on the same images while `seed` varies the training.
    split_seed: Optional[int] = None
    source: Optional[DataConfig] = None
    target: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: Optional[AdaptConfig] = None
    distribute: DistributeConfig = field(default_factory=DistributeConfig)

    @property
    def data_seed(self) -> int:
        """The seed of the splits: `split_seed`, or `seed` when that is null."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(data: dict, origin: str = "<config>") -> Config:
    try:
        cfg = build(Config, data)
        cross_checks(cfg)
    except Invalid as err:
        raise ConfigError(
            f"{origin}: {err.key}: {err.value!r} is not allowed; expected {err.allowed}"
        ) from None
    warn_unused(data, origin)
    return cfg


def load_config(path: Optional[Path] = None, overrides: tuple[str, ...] | list[str] = ()) -> Config:
    """Reads, overrides and validates a config. `path=None` reads the default config."""
    path = Path(path) if path is not None else default_config_path()
    data = apply_overrides(read_yaml(path), list(overrides))
    origin = str(path) + (" (with --set overrides)" if overrides else "")
    return config_from_dict(data, origin)


def dump_config(cfg: Config) -> str:
    data = cfg.to_dict()
    if cfg.adapt is not None:  # unused with adaptation (see configcheck.warn_unused): not written as if in force
        for stage in ("pretrain", "finetune"):
            data["train"].pop(stage)
    return yaml.safe_dump(data, sort_keys=False)
