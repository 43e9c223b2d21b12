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

        # Every step passes both domains under the run's BN protocol (as TLlib's MCD does).
        def step_a():  # (A) features and both heads learn the source
            fs, _ = self.domain_features(xs, xt)
            return ce(ys, self.head(fs, training=True)) + ce(ys, self.head2(fs, training=True)), None

        def step_b():  # (B) fixed features: heads learn the source, disagree on the target
            fs, ft = (tf.stop_gradient(f) for f in self.domain_features(xs, xt))
            disc = discrepancy(self.head(ft, training=True), self.head2(ft, training=True))
            return ce(ys, self.head(fs, training=True)) + ce(ys, self.head2(fs, training=True)) - disc, disc

        def step_c():  # (C) features make the heads agree on the target
            _, ft = self.domain_features(xs, xt)
            return discrepancy(self.head(ft, training=True), self.head2(ft, training=True)), None

        loss_a, _ = self.minimize(step_a, g_vars + f_vars)
        _, disc_b = self.minimize(step_b, f_vars)
        for _ in range(int(self.hp["num_k"])):
            disc_c, _ = self.minimize(step_c, g_vars)

        ps = self.head(self.features(xs, training=False), training=False)
        pt = self.head(self.features(xt, training=False), training=False)
        return self.record(Batch(xs, ys, xt, yt, None, None, ps, pt), loss=loss_a, cls_loss=loss_a / 2,
                           adapt_loss=disc_c, logs={"discrepancy": disc_b})
