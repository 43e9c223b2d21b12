"""MCD: two heads disagree on the target; the features learn to make them agree."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, Batch, split_rows, every_labelled
from kerastl.adaptation.catalog import Param, declare

declare("mcd", "MCD", "two heads disagree on the target, features make them agree (Saito et al. 2018)",
        num_k=Param(4, "feature-extractor updates per step", 1, 100))


def discrepancy(p1, p2):
    return tf.reduce_mean(tf.abs(p1 - p2))


class MCD(AdaptationModel):
    """Maximum classifier discrepancy (Saito et al., CVPR 2018).

    Each step: (A) features and both heads learn the source; (B) with the features
    fixed, the heads learn the source while maximising their disagreement on the target;
    (C) `num_k` times, the features learn to minimise that disagreement. `adapt.weight`
    scales the disagreement in (B) and (C) (TLlib's `trade_off`).
    """


    def build_extra(self):
        self.head2 = keras.models.clone_model(self.head)
        self.head2.build((None, self.feature_dim))

    def extra_variables(self):
        return self.head2.trainable_variables

    def update(self, xs, ys, xt, yt, labelled=None):
        g_vars = self.features.trainable_variables
        f_vars = self.head.trainable_variables + self.head2.trainable_variables
        xl, yl = labelled if labelled is not None else (None, None)

        # Every step passes both domains through the features and both heads under the run's
        # BN protocol (joint by default, as TLlib's MCD), so the heads' BatchNormalization
        # layers (model.hidden_bn) see what the backbone's see. Returns each head's
        # [source, target(, labelled target)] predictions.
        def heads(feats):
            if self.bn_protocol == "joint":
                joint = tf.concat(feats, axis=0)
                return (split_rows(self.head(joint, training=True), feats),
                        split_rows(self.head2(joint, training=True), feats))
            target_training = self.bn_protocol == "separate"
            return tuple([h(feats[0], training=True), *(h(f, training=target_training) for f in feats[1:])]
                         for h in (self.head, self.head2))

        def labelled_ce(p):  # the source's labels and, semi-supervised, the labelled target's
            return self.cross_entropy(*every_labelled(ys, p[0], yl, p[2] if xl is not None else None))

        def step_a():  # (A) features and both heads learn the labelled images
            p1, p2 = heads(self.domain_features(xs, xt, xl))
            return labelled_ce(p1) + labelled_ce(p2), None

        def step_b():  # (B) fixed features: heads learn the labelled images, disagree on the target
            p1, p2 = heads([tf.stop_gradient(f) for f in self.domain_features(xs, xt, xl)])
            disc = discrepancy(p1[1], p2[1])
            return labelled_ce(p1) + labelled_ce(p2) - self.adaptation_weight() * disc, disc

        def step_c():  # (C) features make the heads agree on the target
            p1, p2 = heads(self.domain_features(xs, xt, xl))
            return self.adaptation_weight() * discrepancy(p1[1], p2[1]), None

        loss_a, _ = self.minimize(step_a, g_vars + f_vars)
        _, disc_b = self.minimize(step_b, f_vars)
        for _ in range(int(self.hp["num_k"])):
            disc_c, _ = self.minimize(step_c, g_vars)

        ps = self.head(self.features(xs, training=False), training=False)
        pt = self.head(self.features(xt, training=False), training=False)
        return self.record(Batch(xs, ys, xt, yt, None, None, ps, pt), loss=loss_a, cls_loss=loss_a / 2,
                           adapt_loss=disc_c, logs={"discrepancy": disc_b})
