"""Loss helpers shared by several methods and by the base step (no method declared here).

`global_batch` gathers a statistic's rows from every replica; `class_confusion` is MCC's
loss, used by the `mcc` method.
"""

from __future__ import annotations

import tensorflow as tf


def global_batch(x):
    """This replica's rows -> the rows of every replica (the global batch).

    Batch statistics (covariances, kernel means) must be those of the global batch for N
    replicas to take the step one device would; `all_gather` is differentiable and
    routes each replica's share of the gradient back to it.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)


def class_confusion(probs, temperature: float = 2.5):
    """MCC's loss for a batch of class probabilities (rows sum to 1).

    The probabilities are re-softened at `temperature` (softmax(log p / T), which equals
    softmax(logits / T)); each example is weighted by 1 + exp(-entropy) (confident examples
    count more), normalised to a mean of 1; the class-correlation matrix P^T W P is
    normalised row by row, and the loss is the mass off its diagonal divided by the
    number of classes: 0 when every class is predicted apart from the others, (C - 1) / C
    for uniform predictions.
    """
    p = tf.nn.softmax(tf.math.log(tf.maximum(probs, 1e-30)) / temperature, axis=1)
    n, c = tf.cast(tf.shape(p)[0], p.dtype), tf.cast(tf.shape(p)[1], p.dtype)
    entropy = tf.stop_gradient(-tf.reduce_sum(p * tf.math.log(p + 1e-5), axis=1))
    weight = 1.0 + tf.exp(-entropy)
    weight = n * weight / tf.reduce_sum(weight)
    confusion = tf.matmul(p * weight[:, None], p, transpose_a=True)
    confusion = confusion / tf.reduce_sum(confusion, axis=1, keepdims=True)
    return (tf.reduce_sum(confusion) - tf.linalg.trace(confusion)) / c
