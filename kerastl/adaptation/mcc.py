"""MCC: minimum class confusion on the unlabelled target (Jin et al., ECCV 2020)."""

from __future__ import annotations

import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, register
from kerastl.adaptation.catalog import Param, declare
from kerastl.adaptation.statistics import global_batch

declare("mcc", "MCC", "minimises the confusion between classes in the target's predictions (Jin et al. 2020)",
        temperature=Param(2.5, "the predictions are softened by this temperature first", 0.01, 100.0))


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


@register("mcc")
class MCC(AdaptationModel):
    """Minimum class confusion (Jin et al., ECCV 2020): a non-adversarial loss on the target's
    predictions alone that discourages the classifier from confusing classes on the target
    (TLlib's form; temperature 2.5, weight 1). It needs no extra network."""

    def adaptation_loss(self, batch):
        # A statistic of the whole batch: every replica computes the global batch's loss.
        return class_confusion(global_batch(batch.pt), float(self.hp["temperature"])), {}
