"""AdaBN: the target's own BatchNormalization statistics (Li et al., ICLR workshops 2017).

Training changes nothing; afterwards every BN layer's moving mean and variance are
re-estimated on unlabelled target images, so the target is normalised by its own
statistics. `adabn` is the method (source-only training, then re-estimation); with
`adapt.adabn: true` the re-estimation follows any other method.
"""

from __future__ import annotations

from kerastl.adaptation.base import register
from kerastl.adaptation.baselines import SourceOnly
from kerastl.adaptation.catalog import declare

declare("adabn", "AdaBN", "source only, then every BN layer's statistics re-estimated on the target (Li et al. 2017)")


@register("adabn")
class AdaBN(SourceOnly):
    """Source-only training, then BatchNormalization statistics of the target."""

    recalibrates_bn = True


def recalibrate_batchnorm(model, batches) -> int:
    """Sets every BatchNormalization layer's moving mean and variance in `model` to the
    average of its batch statistics over `batches` (images, no labels), as SWA's
    `update_bn` does. Layers that are frozen for training are re-estimated too; trainable
    flags and momenta are restored. Returns the number of batches.
    """
    import numpy as np
    import tensorflow as tf

    from kerastl.models.factory import batchnorm_layers

    layers = list(batchnorm_layers(model))
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.trainable = True  # Keras 3 runs a non-trainable BN layer in inference mode
            layer.momentum = 0.0  # a training-mode call leaves the batch's own statistics
        # One traced pass per batch (BN normalises by batch statistics in training mode, so
        # the moving values do not feed back); their average is accumulated here.
        forward = tf.function(lambda images: model(images, training=True))
        for images in batches:
            forward(images)
            count += 1
            for i, layer in enumerate(layers):
                means[i] += np.asarray(layer.moving_mean)
                variances[i] += np.asarray(layer.moving_variance)
        for i, layer in enumerate(layers):
            if count:
                layer.moving_mean.assign((means[i] / count).astype(np.float32))
                layer.moving_variance.assign((variances[i] / count).astype(np.float32))
    finally:
        for layer, (trainable, momentum) in zip(layers, saved):
            layer.trainable, layer.momentum = trainable, momentum
    return count
