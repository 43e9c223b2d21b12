"""Registry of `keras.applications` image backbones.

Each entry knows its constructor, family, default input size, the smallest input it
accepts, and the input preprocessing its ImageNet weights expect. Models whose constructor
already preprocesses (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3) take pixels in
[0, 255] as they are; for the others kerastl adds the equivalent of the family's
`preprocess_input` as built-in Keras layers (see `preprocessing_layers`), so that a saved
classifier takes plain [0, 255] RGB pixels and loads without kerastl.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerastl.errors import ModelError
from kerastl.registry import Registry

# mode -> what keras.applications.<family>.preprocess_input does
#   "none":  nothing (the model preprocesses inside)
#   "tf":    x / 127.5 - 1
#   "torch": x / 255, then (x - mean) / std per channel
#   "caffe": RGB -> BGR, then subtract the per-channel ImageNet mean
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # the keras.applications function name
    family: str
    default_size: int
    min_size: int
    preprocessing: str  # none | tf | torch | caffe

    def constructor(self):
        import keras

        return getattr(keras.applications, self.name)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _add(family, preprocessing, min_size, entries):
    for name, size in entries:
        BACKBONES.register(name, BackboneSpec(name, family, size, min_size, preprocessing))


_add("MobileNet", "tf", 32, [("MobileNet", 224)])
_add("MobileNetV2", "tf", 32, [("MobileNetV2", 224)])
_add("MobileNetV3", "none", 32, [("MobileNetV3Small", 224), ("MobileNetV3Large", 224)])
_add("EfficientNet", "none", 32, [
    ("EfficientNetB0", 224), ("EfficientNetB1", 240), ("EfficientNetB2", 260),
    ("EfficientNetB3", 300), ("EfficientNetB4", 380), ("EfficientNetB5", 456),
    ("EfficientNetB6", 528), ("EfficientNetB7", 600),
])
_add("EfficientNetV2", "none", 32, [
    ("EfficientNetV2B0", 224), ("EfficientNetV2B1", 240), ("EfficientNetV2B2", 260),
    ("EfficientNetV2B3", 300), ("EfficientNetV2S", 384), ("EfficientNetV2M", 480),
    ("EfficientNetV2L", 480),
])
_add("ResNet", "caffe", 32, [("ResNet50", 224), ("ResNet101", 224), ("ResNet152", 224)])
_add("ResNetV2", "tf", 32, [("ResNet50V2", 224), ("ResNet101V2", 224), ("ResNet152V2", 224)])
_add("ConvNeXt", "none", 32, [
    ("ConvNeXtTiny", 224), ("ConvNeXtSmall", 224), ("ConvNeXtBase", 224),
    ("ConvNeXtLarge", 224), ("ConvNeXtXLarge", 224),
])
_add("DenseNet", "torch", 32, [("DenseNet121", 224), ("DenseNet169", 224), ("DenseNet201", 224)])
_add("Xception", "tf", 71, [("Xception", 299)])
_add("InceptionV3", "tf", 75, [("InceptionV3", 299)])
_add("InceptionResNetV2", "tf", 75, [("InceptionResNetV2", 299)])
_add("NASNet", "tf", 32, [("NASNetMobile", 224), ("NASNetLarge", 331)])
_add("VGG", "caffe", 32, [("VGG16", 224), ("VGG19", 224)])


def get_backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES.get(name)
    except Exception as err:
        raise ModelError(f"model.backbone: {err}") from None


def preprocessing_layers(mode: str) -> list:
    """Built-in Keras layers equal to the family's `preprocess_input` on [0, 255] RGB."""
    import keras
    import numpy as np

    if mode == "none":
        return []
    if mode == "tf":
        return [keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")]
    if mode == "torch":
        std = np.array(_TORCH_STD)
        scale = (1.0 / (255.0 * std)).tolist()
        offset = (-np.array(_TORCH_MEAN) / std).tolist()
        return [keras.layers.Rescaling(scale, offset=offset, name="preprocess")]
    if mode == "caffe":
        # RGB -> BGR and mean subtraction as one fixed 1x1 linear map over channels.
        kernel = np.zeros((3, 3), np.float32)
        kernel[0, 2] = kernel[1, 1] = kernel[2, 0] = 1.0
        bias = -np.array(_CAFFE_MEAN_BGR, np.float32)
        layer = keras.layers.Dense(
            3, trainable=False, name="preprocess",
            kernel_initializer=keras.initializers.Constant(kernel),
            bias_initializer=keras.initializers.Constant(bias),
        )
        return [layer]
    raise ValueError(f"unknown preprocessing mode {mode!r}")
