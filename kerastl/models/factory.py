"""Model factory: a `keras.applications` backbone + preprocessing + a new head.

    image (H, W, 3) float in [0, 255]
      -> preprocessing (the family's preprocess_input, as built-in layers)
      -> backbone (the keras.applications model, include_top=False, nested as one layer)
      -> global pooling -> dropout -> [hidden Dense -> dropout]... -> Dense softmax

The classifier is a plain functional model of built-in layers: `model.keras` loads with
`safe_mode=True` and without kerastl installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from kerastl.errors import ModelError
from kerastl.models.backbones import BackboneSpec, get_backbone_spec, preprocessing_layers

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


def is_run_dir(path: str) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "model.keras").exists() and (p / "config.yaml").exists()


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
    elif is_run_dir(weights):
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


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from batchnorm_layers(layer)


def load_backbone_from_run(backbone, run_dir: str, spec: BackboneSpec):
    import keras

    from kerastl.config import load_config

    run_cfg = load_config(Path(run_dir) / "config.yaml")
    if get_backbone_spec(run_cfg.model.backbone).name != spec.name:
        raise ModelError(
            f"model.weights: run {run_dir} trained a {run_cfg.model.backbone}, "
            f"not a {spec.name}; set model.backbone to {run_cfg.model.backbone}"
        )
    old = keras.saving.load_model(Path(run_dir) / "model.keras", compile=False, safe_mode=True)
    try:
        backbone.set_weights(get_backbone(old).get_weights())
    except ValueError as err:
        raise ModelError(
            f"model.weights: the backbone of run {run_dir} does not fit this one "
            f"(different model.backbone_args?): {err}"
        ) from None


def build_classifier(cfg, num_classes: int):
    """Returns (classifier, spec, input_size) for the `model` config section."""
    import keras

    spec = get_backbone_spec(cfg.backbone)
    size = resolve_input_size(cfg, spec)
    backbone = build_backbone(cfg, spec, size)

    # === Layers ===
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    for layer in preprocessing_layers(spec.preprocessing):
        x = layer(x)
    x = backbone(x)
    pool = keras.layers.GlobalAveragePooling2D if cfg.pooling == "avg" else keras.layers.GlobalMaxPooling2D
    x = pool(name="pool")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    for i, units in enumerate(cfg.hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"hidden_dropout_{i}")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    # === Functional Model ===
    model = keras.Model(inputs, outputs, name=f"kerastl_{spec.name.lower()}")
    return model, spec, size


def get_backbone(model):
    """The backbone: the one nested model inside a kerastl classifier."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ModelError(f"{model.name} is not a kerastl classifier (no single nested backbone model)")
    return nested[0]


def set_trainable(model, policy, bn: str):
    """Applies a freezing policy to the backbone of `model`.

    Args:
        policy: `"frozen"` (nothing in the backbone trains), `"all"`, `"none"`, an
            integer N (the top N layers of the backbone train), or a layer name (that
            layer and every one after it train).
        bn: `"frozen"` keeps every BatchNormalization layer of the backbone in inference
            mode (Keras 3 runs a BN layer with `trainable=False` in inference mode, so its
            moving statistics do not move); `"train"` lets the trainable ones update.
    """
    import keras

    backbone = get_backbone(model)
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


def validate_unfreeze(model, policy):
    """Fails early (before any training) on an `unfreeze` layer name that does not exist."""
    if isinstance(policy, str) and policy not in ("all", "none"):
        names = [layer.name for layer in get_backbone(model).layers]
        if policy not in names:
            set_trainable(model, policy, "train")  # raises the ModelError with the names
