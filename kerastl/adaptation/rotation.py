"""Rotation: a self-supervised task shared by both domains (predict each image's rotation)."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, register
from kerastl.adaptation.catalog import Param, declare

declare("rotation", "Rotation", "predicts each image's rotation (0/90/180/270 degrees) on both domains "
                                "with the shared features (Sun et al. 2019)",
        source=Param(True, "the source images take part in the rotation task too (false: target only)"),
        hidden=Param(0, "units of the rotation head's hidden layer (0: a linear head, as the paper)", 0, None))


def quarter_turns(images, k):
    """Each image of `images` (N, S, S, C; square) turned k[i] x 90 degrees counter-clockwise,
    as `np.rot90(image, k[i])` does."""
    turns = tf.stack([images, *(tf.image.rot90(images, i) for i in (1, 2, 3))], axis=1)
    return tf.gather(turns, k, axis=1, batch_dims=1)


def turns_of(n, first):
    """The rotation label of the images at global-batch positions first .. first + n - 1:
    position mod 4, so each quarter of the batch gets each rotation and N replicas, each
    with its slice of the global batch, label their images as one device labels the whole
    batch (the rows of a batch come in shuffled order, so the cycle is not tied to a class)."""
    return tf.math.floormod(tf.range(n) + first, 4)


@register("rotation")
class Rotation(AdaptationModel):
    """Self-supervised domain adaptation by rotation prediction (Sun, Tzeng, Darrell and
    Efros, "Unsupervised domain adaptation through self-supervision", 2019).

    Every step also turns each source and target image by 0, 90, 180 or 270 degrees and
    trains a small head to tell the turn from the shared features (cross-entropy, the
    method's adaptation loss). Both domains must support the same head, so the features
    learn structure the unlabelled target shares with the source, with no adversary. Costs
    one more forward and backward pass of the backbone per step. The rotation head is not
    part of the saved classifier. Images must be square (kerastl's input pipeline makes
    them so).
    """

    def build_extra(self):
        inputs = keras.Input((self.feature_dim,))
        x = inputs
        if int(self.hp["hidden"]):
            x = keras.layers.Dense(int(self.hp["hidden"]), activation="relu")(x)
        out = keras.layers.Dense(4, activation="softmax", dtype="float32")(x)
        self.rotation_head = keras.Model(inputs, out, name="rotation_head")

    def extra_variables(self):
        return self.rotation_head.trainable_variables

    def adaptation_loss(self, batch):
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        parts = [batch.xs, batch.xt] if self.hp["source"] else [batch.xt]
        turned, labels = [], []
        for x in parts:
            n = tf.shape(x)[0]
            k = turns_of(n, tf.cast(replica, tf.int32) * n)
            turned.append(quarter_turns(x, k))
            labels.append(k)
        # Through the backbone under the run's BN protocol, as the unturned images were.
        if len(turned) == 2:
            feats = self.domain_features(*turned)
        else:
            feats = [self.features(turned[0], training=self.bn_protocol != "source")]
        p = self.rotation_head(tf.concat(feats, axis=0), training=True)
        y = tf.one_hot(tf.concat(labels, axis=0), 4)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, p))
        accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(p, axis=1), tf.argmax(y, axis=1)), tf.float32))
        return loss, {"rotation_accuracy": accuracy}
