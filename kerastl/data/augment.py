"""Augmentations configured in YAML, built from Keras preprocessing layers.

    augment: {flip: horizontal, rotate: 0.05, zoom: 0.1, translate: 0.1, contrast: 0.2}

Each value is the layer's main argument, or a mapping of its keyword arguments.
"""

from __future__ import annotations

from kerastl.errors import ConfigError
from kerastl.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")


def _layer(cls_name: str, main_arg: str):
    def make(value, seed):
        import keras

        cls = getattr(keras.layers, cls_name)
        kwargs = dict(value) if isinstance(value, dict) else {main_arg: value}
        return cls(seed=seed, **kwargs)

    return make


for _name, _cls, _arg in [
    ("flip", "RandomFlip", "mode"),
    ("rotate", "RandomRotation", "factor"),
    ("zoom", "RandomZoom", "height_factor"),
    ("translate", "RandomTranslation", "height_factor"),
    ("contrast", "RandomContrast", "factor"),
    ("brightness", "RandomBrightness", "factor"),
    ("crop", "RandomCrop", "height"),
]:
    AUGMENTATIONS.register(_name, _layer(_cls, _arg))


def _expand(name: str, value):
    # translate/zoom/crop with one number act on both axes.
    if name in ("zoom", "translate") and not isinstance(value, dict):
        return {"height_factor": value, "width_factor": value}
    return value


def build_augmenter(spec: dict, seed: int, origin: str):
    """A `keras.Sequential` of augmentation layers, or None when `spec` is empty."""
    import keras

    if not spec:
        return None
    layers = []
    for i, (name, value) in enumerate(spec.items()):
        try:
            canonical = AUGMENTATIONS.canonical(name)
        except Exception as err:
            raise ConfigError(f"{origin}.augment.{name}: {err}") from None
        if canonical == "crop":
            raise ConfigError(
                f"{origin}.augment.crop: random crops change the image size; use zoom instead"
            )
        try:
            layers.append(AUGMENTATIONS.get(canonical)(_expand(canonical, value), seed + i))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{origin}.augment.{name}: {value!r} is not accepted: {err}") from None
    return keras.Sequential(layers, name="augment")
