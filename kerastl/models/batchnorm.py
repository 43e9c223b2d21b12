"""BatchNormalization statistics after training: re-estimated from batches of images.

A BN layer's moving mean and variance are exponential averages: after n training steps at
momentum m, a share m^n of them is still the value they started from (ImageNet's, the
source domain's, or the initial 0 and 1). With Keras' usual 0.99 or MobileNetV3's and
EfficientNet's 0.999 a short fine-tuning run leaves them mostly unchanged, and inference
then normalises by statistics the trained weights never saw: the model predicts the same
near-uniform output for every image. Re-estimating them as the average of batch statistics
over the training images (precise BN; SWA's `update_bn`) fixes that without training.
"""

from __future__ import annotations

from kerastl.models.factory import batchnorm_layers


def stale_share(model, updates: int) -> float:
    """The largest share m^updates of its starting statistics that a BN layer of `model`
    that trains (trainable) still holds after `updates` training steps; 0 without any."""
    momenta = [float(layer.momentum) for layer in batchnorm_layers(model) if layer.trainable]
    return max((m ** updates for m in momenta), default=0.0)


def recalibrate_batchnorm(model, batches, only_trainable: bool = False) -> int:
    """Sets the moving mean and variance of every BatchNormalization layer in `model` (with
    `only_trainable`, of those that train) to the average of its batch statistics over
    `batches` (images, no labels), as SWA's `update_bn` does. Trainable flags and momenta
    are restored. Returns the number of batches.
    """
    import numpy as np
    import tensorflow as tf

    layers = [layer for layer in batchnorm_layers(model) if layer.trainable or not only_trainable]
    saved = [(layer.trainable, layer.momentum) for layer in layers]
    means = [np.zeros(layer.moving_mean.shape, np.float64) for layer in layers]
    variances = [np.zeros(layer.moving_variance.shape, np.float64) for layer in layers]
    count = 0
    try:
        for layer in layers:
            layer.trainable = True  # Keras 3 runs a non-trainable BN layer in inference mode
            layer.momentum = 0.0  # a training-mode call leaves the batch's own statistics
        # One traced pass per batch (BN normalises by batch statistics in training mode, so
        # the moving values do not feed back); their average is accumulated here. Layers
        # left out stay non-trainable, so they normalise by their moving statistics.
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
