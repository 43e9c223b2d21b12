"""Augmentations configured in YAML, built from Keras preprocessing layers.

    augment: {flip: horizontal, rotate: 0.05, zoom: 0.1, translate: 0.1, contrast: 0.2}
    augment: {randaugment: {num_ops: 2, factor: 0.3}, mixup: 0.2, cutmix: 1.0}

Each value is the layer's main argument, or a mapping of its keyword arguments. Batches are
augmented with seeds derived from (run seed, epoch, batch): the same seed, the same run.
`mixup` and `cutmix` mix images and their labels within a batch; they come after the
others, and only labelled training (pretrain, finetune) takes them.
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
    ("randaugment", "RandAugment", "factor"),
    ("mixup", "MixUp", "alpha"),
    ("cutmix", "CutMix", "factor"),
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

    Consecutive rotate / zoom / translate layers (same fill mode and interpolation) are
    applied as ONE affine resampling: their draws are unchanged, their output -> input
    maps are multiplied, and the image is resampled once instead of once per layer. A
    resampling costs about as much as decoding a photo, and interpolating once also blurs
    less than three times in a row.
    """

    def __init__(self, layers: list):
        # Layers that mix labels act last, on the batch the others made.
        self.layers = sorted(layers, key=_mixes_labels)

    @property
    def mixes_labels(self) -> bool:
        return any(map(_mixes_labels, self.layers))

    def __call__(self, images, seed, labels=None):
        """images: float32 (batch, h, w, 3); seed: int64 tensor of shape (2,); labels:
        one-hot (batch, classes), needed when a layer mixes them. Returns the images, or
        (images, labels) when labels are given."""
        import tensorflow as tf

        group = []  # consecutive geometric layers that resample alike: (layer, transformation)
        for i, layer in enumerate(self.layers):
            draws = _seed_stream(tf.random.experimental.stateless_fold_in(seed, i))
            transformation = _draw(layer, images, draws)
            key = _affine_key(layer)
            if group and key != _affine_key(group[0][0]):
                images, group = _apply_affine(images, group), []
            if key is not None:
                group.append((layer, transformation))
            else:
                images = layer.transform_images(images, transformation, training=True)
                if _mixes_labels(layer):
                    if labels is None:
                        raise ValueError(f"{layer.name} mixes labels: call the augmenter with them")
                    labels = layer.transform_labels(labels, transformation, training=True)
        images = _apply_affine(images, group) if group else images
        return images if labels is None else (images, labels)


def _mixes_labels(layer) -> bool:
    import keras

    return isinstance(layer, (keras.layers.MixUp, keras.layers.CutMix))


def _draw(layer, images, draws):
    """`layer`'s random transformation of `images`, drawn from `draws` (a seed stream).

    Works around Keras 3's RandAugment, whose `get_random_transformation` ignores its
    `seed` argument and draws from the layer's own stateful generator (a race inside a
    parallel tf.data map): for the draw, that generator is the stream."""
    import keras

    if isinstance(layer, keras.layers.RandAugment):
        own, layer.generator = layer.generator, draws
        try:
            return layer.get_random_transformation(images, training=True, seed=draws)
        finally:
            layer.generator = own
    return layer.get_random_transformation(images, training=True, seed=draws)


def _affine_key(layer):
    """How a geometric layer resamples (fill mode, value, interpolation), or None for the
    layers that are not an affine map of pixel coordinates (flip, contrast, brightness)."""
    import keras

    if not isinstance(layer, (keras.layers.RandomRotation, keras.layers.RandomZoom,
                              keras.layers.RandomTranslation)):
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    return (layer.fill_mode, float(layer.fill_value), layer.interpolation)


def _matrix(layer, transformation, height, width):
    """The (batch, 3, 3) output -> input pixel map of one layer's drawn transformation: the
    8-parameter transforms these Keras layers hand to `keras.ops.image.affine_transform`
    (rotation: its `rotation_matrix`; zoom about the image centre; translation in pixels)."""
    import keras
    import tensorflow as tf

    if isinstance(layer, keras.layers.RandomRotation):
        m = tf.reshape(tf.cast(transformation["rotation_matrix"], tf.float32), [-1, 8])
    elif isinstance(layer, keras.layers.RandomZoom):
        zx = tf.reshape(tf.cast(transformation["width_zoom"], tf.float32), [-1, 1])
        zy = tf.reshape(tf.cast(transformation["height_zoom"], tf.float32), [-1, 1])
        zero = tf.zeros_like(zx)
        m = tf.concat([zx, zero, (width - 1.0) / 2.0 * (1.0 - zx), zero, zy, (height - 1.0) / 2.0 * (1.0 - zy),
                       zero, zero], axis=1)
    else:
        t = tf.cast(transformation["translations"], tf.float32)  # (dx, dy) in pixels
        one, zero = tf.ones_like(t[:, :1]), tf.zeros_like(t[:, :1])
        m = tf.concat([one, zero, -t[:, :1], zero, one, -t[:, 1:], zero, zero], axis=1)
    return tf.reshape(tf.concat([m, tf.ones_like(m[:, :1])], axis=1), [-1, 3, 3])


def _apply_affine(images, group):
    """`images` resampled once through the product of the group's maps. Layer k maps an
    output pixel p of its own to M_k p in its input, so the chain's output pixel p reads
    M_1 M_2 ... M_n p of the first layer's input."""
    import keras
    import tensorflow as tf

    if len(group) == 1:
        layer, transformation = group[0]
        return layer.transform_images(images, transformation, training=True)
    shape = tf.shape(images)
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    total = None
    for layer, transformation in group:
        m = _matrix(layer, transformation, height, width)
        total = m if total is None else tf.matmul(total, m)
    fill_mode, fill_value, interpolation = _affine_key(group[0][0])
    return keras.ops.image.affine_transform(images, tf.reshape(total, [-1, 9])[:, :8], interpolation=interpolation,
                                            fill_mode=fill_mode, fill_value=fill_value)


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
