"""Model factory: a `keras.applications` backbone + preprocessing + a new head.

    image (H, W, 3) float in [0, 255]
      -> preprocessing (the family's preprocess_input, as built-in layers)
      -> backbone (the keras.applications model, include_top=False, nested as one layer)
      -> global pooling [-> bottleneck Dense -> BN -> ReLU]
      -> dropout -> [hidden Dense [-> BN] -> ReLU -> dropout]... -> Dense softmax

The classifier is a plain functional model of built-in layers: `model.keras` loads with
`safe_mode=True` and without kerastl installed. Training code gets a `Classifier` handle
that names its parts (backbone, features, head) as they were built, instead of finding
them by layer name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from kerastl import runs
from kerastl.errors import ModelError
from kerastl.models.backbones import BackboneSpec, get_backbone_spec, preprocessing_layers


@dataclass(frozen=True)
class Classifier:
    """A kerastl classifier and its parts, which share their layers and weights.

    Attributes:
        model: image -> class probabilities; the functional model saved as `model.keras`.
        backbone: the `keras.applications` model nested in `model`.
        features: image -> pooled backbone features, or the bottleneck's output when the
            model has one (what domain adaptation aligns).
        head: features -> class probabilities.
        input_size: the square input side in pixels.
        spec: the backbone family's description (None for a hand-assembled backbone).
    """

    model: Any
    backbone: Any
    features: Any
    head: Any
    input_size: int
    spec: Optional[BackboneSpec] = None

def resolve_input_size(cfg, spec: BackboneSpec) -> int:
    size = cfg.input_size or spec.default_size
    if size < spec.min_size:
        raise ModelError(
            f"model.input_size: {size} is too small for {spec.name}; "
            f"it needs at least {spec.min_size}"
        )
    return size


def _imagenet_error(spec: BackboneSpec, err: Exception) -> ModelError:
    cache = os.path.join(os.path.expanduser(os.environ.get("KERAS_HOME", "~/.keras")), "models")
    return ModelError(
        f"model.weights: could not download the ImageNet weights of {spec.name} "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        f"Without internet access, place the 'notop' weights file that keras.applications."
        f"{spec.name} downloads into {cache}/ (copy it from a machine that has run "
        f"keras.applications.{spec.name}(include_top=False, weights='imagenet')), or set "
        "model.weights to a local weights file, a previous kerastl run, or none."
    )


def build_backbone(cfg, spec: BackboneSpec, size: int):
    """The backbone with `cfg.weights` loaded (imagenet / none / file / kerastl run)."""
    weights = cfg.weights
    ctor = spec.constructor()
    # No `name=`: EfficientNetV2 looks its block layout up by the model name.
    kwargs = dict(include_top=False, input_shape=(size, size, 3))
    kwargs.update(cfg.backbone_args)
    from_run = None
    if weights.lower() == "none":
        kwargs["weights"] = None
    elif weights.lower() == "imagenet":
        kwargs["weights"] = "imagenet"
    elif runs.is_run_dir(weights):
        kwargs["weights"] = None
        from_run = weights
    elif Path(weights).is_file():
        kwargs["weights"] = weights
    else:
        raise ModelError(
            f"model.weights: {weights!r} is not 'imagenet', 'none', an existing weights "
            "file, or a kerastl run directory (one holding model.keras and config.yaml)"
        )
    try:
        backbone = ctor(**kwargs)
    except TypeError as err:
        raise ModelError(f"model.backbone_args: {cfg.backbone_args!r} rejected by {spec.name}: {err}") from None
    except ValueError as err:
        if kwargs.get("weights") == "imagenet" and "download" not in str(err).lower():
            raise ModelError(f"model: {spec.name} with ImageNet weights: {err}") from None
        if kwargs.get("weights") not in (None, "imagenet"):
            raise ModelError(f"model.weights: {weights} does not fit {spec.name}: {err}") from None
        raise ModelError(f"model: cannot build {spec.name} at {size}x{size}: {err}") from None
    except Exception as err:  # downloads fail with URLError, HTTPError, OSError, ...
        if kwargs.get("weights") == "imagenet":
            raise _imagenet_error(spec, err) from None
        if kwargs.get("weights"):
            raise ModelError(f"model.weights: cannot load {weights} into {spec.name}: {err}") from None
        raise
    if from_run is not None:
        load_backbone_from_run(backbone, from_run, spec)
    if cfg.bn_momentum is not None:
        for layer in batchnorm_layers(backbone):
            layer.momentum = cfg.bn_momentum
    return backbone


def leaf_layers(model):
    """Every layer of `model` that is not itself a model, nested models walked into."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    import keras

    return (layer for layer in leaf_layers(model) if isinstance(layer, keras.layers.BatchNormalization))


def load_backbone_from_run(backbone, run_dir: str, spec: BackboneSpec):
    run_cfg = runs.read_config(run_dir)
    if get_backbone_spec(run_cfg.model.backbone).name != spec.name:
        raise ModelError(
            f"model.weights: run {run_dir} trained a {run_cfg.model.backbone}, "
            f"not a {spec.name}; set model.backbone to {run_cfg.model.backbone}"
        )
    old = runs.load_model(run_dir)
    try:
        backbone.set_weights(nested_backbone(old).get_weights())
    except ValueError as err:
        raise ModelError(
            f"model.weights: the backbone of run {run_dir} does not fit this one "
            f"(different model.backbone_args?): {err}"
        ) from None


def build_classifier(cfg, num_classes: int) -> Classifier:
    """The classifier the `model` config section describes, for `num_classes` classes."""
    spec = get_backbone_spec(cfg.backbone)
    size = resolve_input_size(cfg, spec)
    backbone = build_backbone(cfg, spec, size)
    return assemble_classifier(
        backbone, num_classes, preprocessing=preprocessing_layers(spec.preprocessing), pooling=cfg.pooling,
        bottleneck=cfg.bottleneck, dropout=cfg.dropout, hidden=cfg.hidden, hidden_bn=cfg.hidden_bn,
        name=f"kerastl_{spec.name.lower()}",
        spec=spec,
    )


def assemble_classifier(backbone, num_classes: int, *, preprocessing=(), pooling: str = "avg",
                        bottleneck: Optional[int] = None, dropout: float = 0.0, hidden=(),
                        hidden_bn: bool = False, name: str = "classifier", spec: Optional[BackboneSpec] = None) -> Classifier:
    """image -> preprocessing -> `backbone` -> pooling [-> bottleneck] -> head, and its parts.

    The features are the pooled output, or the bottleneck's (Dense -> BatchNormalization ->
    ReLU, as TLlib's) when there is one. The head is dropout -> [hidden Dense [-> BN] -> ReLU
    -> dropout]... -> Dense softmax (float32 even under mixed precision). Tests assemble tiny backbones
    with it.
    """
    import keras

    size = int(backbone.input_shape[1])
    # === Layers ===
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in preprocessing:
        x = layer(x)
    x = backbone(x)
    pool = keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    feats = pool(name="pool")(x)
    if bottleneck:
        feats = keras.layers.Dense(bottleneck, name="bottleneck")(feats)
        feats = keras.layers.BatchNormalization(name="bottleneck_bn")(feats)
        feats = keras.layers.ReLU(name="bottleneck_relu")(feats)
    head_layers = [keras.layers.Dropout(dropout, name="dropout")] if dropout else []
    for i, units in enumerate(hidden):
        if hidden_bn:  # Dense -> BN -> ReLU, as MCD's heads (Saito et al. 2018)
            head_layers += [keras.layers.Dense(units, name=f"hidden_{i}"),
                            keras.layers.BatchNormalization(name=f"hidden_bn_{i}"),
                            keras.layers.ReLU(name=f"hidden_relu_{i}")]
        else:
            head_layers.append(keras.layers.Dense(units, activation="relu", name=f"hidden_{i}"))
        if dropout:
            head_layers.append(keras.layers.Dropout(dropout, name=f"hidden_dropout_{i}"))
    head_layers.append(keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions"))
    x = feats
    for layer in head_layers:
        x = layer(x)
    # === Functional Model ===
    model = keras.Model(inputs, x, name=name)
    # The parts share the model's layers: training them trains the model.
    features = keras.Model(inputs, feats, name="features")
    head_in = keras.Input(feats.shape[1:], name="features_in")
    h = head_in
    for layer in head_layers:
        h = layer(h)
    head = keras.Model(head_in, h, name="head")
    return Classifier(model=model, backbone=backbone, features=features, head=head, input_size=size, spec=spec)


def restrict_classes(model, indices):
    """`model` (a kerastl classifier) with only the classes at `indices`, in that order: its
    softmax layer's columns for them, so each image's probabilities are the full model's
    for those classes, renormalized. Shares every other layer with `model`."""
    import keras

    last = model.get_layer("predictions")
    dense = keras.layers.Dense(len(indices), activation="softmax", dtype="float32", name="predictions")
    outputs = dense(last.input)  # the model's own call of it (the head sub-model calls it too)
    kernel, bias = last.get_weights()
    dense.set_weights([kernel[:, indices], bias[indices]])
    return keras.Model(model.inputs, outputs, name=model.name)


def nested_backbone(model):
    """The backbone of a kerastl classifier read from a file (the one nested model); a
    classifier built here names it in its `Classifier` handle instead."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ModelError(f"{model.name} is not a kerastl classifier (no single nested backbone model)")
    return nested[0]


def features_model(model):
    """The features part (image -> pooled or bottleneck output) of a kerastl classifier
    read from a file; a classifier built here names it in its `Classifier` handle."""
    import keras

    names = {layer.name for layer in model.layers}
    last = "bottleneck_relu" if "bottleneck_relu" in names else "pool"
    if last not in names:
        raise ModelError(f"{model.name} is not a kerastl classifier (no {last!r} layer)")
    return keras.Model(model.input, model.get_layer(last).output, name="features")


def set_trainable(backbone, policy, bn: str):
    """Applies a freezing policy to `backbone` (a `Classifier`'s).

    Args:
        policy: `"frozen"` (nothing in the backbone trains), `"all"`, `"none"`, an
            integer N (the top N layers of the backbone train), or a layer name (that
            layer and every one after it train).
        bn: `"frozen"` keeps every BatchNormalization layer of the backbone in inference
            mode (Keras 3 runs a BN layer with `trainable=False` in inference mode, so its
            moving statistics do not move); `"train"` lets the trainable ones update.
    """
    import keras

    layers = [layer for layer in backbone.layers if not isinstance(layer, keras.layers.InputLayer)]
    if policy in ("frozen", "none"):
        backbone.trainable = False
        return
    backbone.trainable = True
    if policy == "all":
        first = 0
    elif isinstance(policy, int):
        first = max(len(layers) - policy, 0)
    else:
        names = [layer.name for layer in layers]
        if policy not in names:
            raise ModelError(
                f"model.unfreeze: {policy!r} is not 'all', 'none', an integer or a layer of "
                f"{backbone.name}; its layers run {names[0]!r} ... {names[-1]!r} "
                f"({len(names)} layers, e.g. {', '.join(names[-5:])})"
            )
        first = names.index(policy)
    for i, layer in enumerate(layers):
        layer.trainable = i >= first
        if bn == "frozen" and isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def validate_unfreeze(backbone, policy):
    """Fails early (before any training) on an `unfreeze` layer name that does not exist."""
    if isinstance(policy, str) and policy not in ("all", "none"):
        names = [layer.name for layer in backbone.layers]
        if policy not in names:
            set_trainable(backbone, policy, "train")  # raises the ModelError with the names
