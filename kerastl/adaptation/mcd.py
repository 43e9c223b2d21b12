"""MCD: two heads disagree on the target; the features learn to make them agree."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, Batch, register
from kerastl.adaptation.catalog import Param, declare

declare("mcd", "MCD", "two heads disagree on the target, features make them agree (Saito et al. 2018)",
        num_k=Param(4, "feature-extractor updates per step", 1, 100))


def discrepancy(p1, p2):
    return tf.reduce_mean(tf.abs(p1 - p2))


@register("mcd")
class MCD(AdaptationModel):
    """Maximum classifier discrepancy (Saito et al., CVPR 2018).

    Each step: (A) features and both heads learn the source; (B) with the features
    fixed, the heads learn the source while maximising their disagreement on the target;
    (C) `num_k` times, the features learn to minimise that disagreement.
    """


    def build_extra(self):
        self.head2 = keras.models.clone_model(self.head)
        self.head2.build((None, self.feature_dim))

    def extra_variables(self):
        return self.head2.trainable_variables

    def update(self, xs, ys, xt, yt):
        g_vars = self.features.trainable_variables
        f_vars = self.head.trainable_variables + self.head2.trainable_variables

        def ce(y, p):
            return tf.reduce_mean(keras.losses.categorical_crossentropy(y, p))

        # Every step passes both domains through the features and both heads under the run's
        # BN protocol (joint by default, as TLlib's MCD), so the heads' BatchNormalization
        # layers (model.hidden_bn) see what the backbone's see.
        def heads(fs, ft):
            if self.bn_protocol == "joint":
                n = tf.shape(fs)[0]
                joint = tf.concat([fs, ft], axis=0)
                p1, p2 = self.head(joint, training=True), self.head2(joint, training=True)
                return p1[:n], p1[n:], p2[:n], p2[n:]
            target_training = self.bn_protocol == "separate"
            return (self.head(fs, training=True), self.head(ft, training=target_training),
                    self.head2(fs, training=True), self.head2(ft, training=target_training))

        def step_a():  # (A) features and both heads learn the source
            ps1, _, ps2, _ = heads(*self.domain_features(xs, xt))
            return ce(ys, ps1) + ce(ys, ps2), None

        def step_b():  # (B) fixed features: heads learn the source, disagree on the target
            ps1, pt1, ps2, pt2 = heads(*(tf.stop_gradient(f) for f in self.domain_features(xs, xt)))
            disc = discrepancy(pt1, pt2)
            return ce(ys, ps1) + ce(ys, ps2) - disc, disc

        def step_c():  # (C) features make the heads agree on the target
            _, pt1, _, pt2 = heads(*self.domain_features(xs, xt))
            return discrepancy(pt1, pt2), None

        loss_a, _ = self.minimize(step_a, g_vars + f_vars)
        _, disc_b = self.minimize(step_b, f_vars)
        for _ in range(int(self.hp["num_k"])):
            disc_c, _ = self.minimize(step_c, g_vars)

        ps = self.head(self.features(xs, training=False), training=False)
        pt = self.head(self.features(xt, training=False), training=False)
        return self.record(Batch(xs, ys, xt, yt, None, None, ps, pt), loss=loss_a, cls_loss=loss_a / 2,
                           adapt_loss=disc_c, logs={"discrepancy": disc_b})
