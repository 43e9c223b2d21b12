"""Augmentations configured in YAML, built from Keras preprocessing layers.

    augment: {flip: horizontal, rotate: 0.05, zoom: 0.1, translate: 0.1, contrast: 0.2}

Each value is the layer's main argument, or a mapping of its keyword arguments. Batches are
augmented with seeds derived from (run seed, epoch, batch): the same seed, the same run.
"""

from __future__ import annotations

import functools

from kerastl.errors import ConfigError
from kerastl.registry import Registry

AUGMENTATIONS: Registry = Registry("augmentation")


def _layer(cls_name: str, main_arg: str):
    def make(value):
        import keras

        cls = getattr(keras.layers, cls_name)
        kwargs = dict(value) if isinstance(value, dict) else {main_arg: value}
        return cls(**kwargs)

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


class Augmenter:
    """Keras preprocessing layers applied to a batch with a seed given per call.

    Keras' random layers draw from a seed generator whose state advances on every call;
    inside a parallel `tf.data` map those calls race, so the same seed gave different
    runs. Here every batch brings its own seed (from the run's seed, the epoch and the
    batch index), each layer draws its transformation statelessly from it through the
    layers' public `get_random_transformation` / `transform_images`, and the result no
    longer depends on thread timing or on where a resumed run started.
    """

    def __init__(self, layers: list):
        self.layers = layers

    def __call__(self, images, seed):
        """images: float32 (batch, h, w, 3); seed: int64 tensor of shape (2,)."""
        import tensorflow as tf

        for i, layer in enumerate(self.layers):
            draws = _seed_stream(tf.random.experimental.stateless_fold_in(seed, i))
            transformation = layer.get_random_transformation(images, training=True, seed=draws)
            images = layer.transform_images(images, transformation, training=True)
        return images


def _seed_stream(seed):
    """A `keras.random.SeedGenerator` handing out seeds folded from `seed`, with no state
    variable: the number of draws is fixed when the map function is traced."""
    return _seed_stream_class()(seed)


@functools.cache
def _seed_stream_class():
    import keras
    import tensorflow as tf

    class SeedStream(keras.random.SeedGenerator):
        def __init__(self, base):  # no super().__init__: it would create a state variable
            self.base, self.draws = base, 0

        def next(self, ordered=True):
            self.draws += 1
            return tf.random.experimental.stateless_fold_in(self.base, self.draws)

    return SeedStream


def build_augmenter(spec: dict, origin: str) -> Augmenter | None:
    """The `Augmenter` of a data section's `augment` mapping, or None when it is empty.

    Raises ConfigError naming `<origin>.augment.<name>` for an unknown augmentation or a
    value its Keras layer does not accept; the training job builds every augmenter before any
    training, so such a mistake stops a run before it starts.
    """
    if not spec:
        return None
    layers = []
    for name, value in spec.items():
        try:
            canonical = AUGMENTATIONS.canonical(name)
        except Exception as err:
            raise ConfigError(f"{origin}.augment.{name}: {err}") from None
        if canonical == "crop":
            raise ConfigError(
                f"{origin}.augment.crop: random crops change the image size; use zoom instead"
            )
        try:
            layers.append(AUGMENTATIONS.get(canonical)(_expand(canonical, value)))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{origin}.augment.{name}: {value!r} is not accepted: {err}") from None
    return Augmenter(layers)
