"""MCD: two heads disagree on the target; the features learn to make them agree."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, register, replicas


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

    def train_step(self, data):
        (xs, ys), (xt, yt) = data
        g_vars = self.features.trainable_variables
        f_vars = self.head.trainable_variables + self.head2.trainable_variables
        r = replicas()

        def ce(y, p):
            return tf.reduce_mean(keras.losses.categorical_crossentropy(y, p)) / r

        with tf.GradientTape() as tape:  # (A)
            fs = self.features(xs, training=True)
            p1, p2 = self.head(fs, training=True), self.head2(fs, training=True)
            loss_a = ce(ys, p1) + ce(ys, p2)
            # scale_loss inside the tape: outside it, mixed precision's scaling is not differentiated.
            scaled = self.optimizer.scale_loss(loss_a)
        self.optimizer.apply(tape.gradient(scaled, g_vars + f_vars), g_vars + f_vars)

        with tf.GradientTape() as tape:  # (B)
            fs = tf.stop_gradient(self.features(xs, training=True))
            ft = tf.stop_gradient(self.features(xt, training=True))
            p1s, p2s = self.head(fs, training=True), self.head2(fs, training=True)
            p1t, p2t = self.head(ft, training=True), self.head2(ft, training=True)
            disc_b = discrepancy(p1t, p2t)
            loss_b = ce(ys, p1s) + ce(ys, p2s) - disc_b / r
            scaled = self.optimizer.scale_loss(loss_b)
        self.optimizer.apply(tape.gradient(scaled, f_vars), f_vars)

        for _ in range(int(self.hp["num_k"])):  # (C)
            with tf.GradientTape() as tape:
                ft = self.features(xt, training=True)
                disc_c = discrepancy(self.head(ft, training=True), self.head2(ft, training=True)) / r
                scaled = self.optimizer.scale_loss(disc_c)
            self.optimizer.apply(tape.gradient(scaled, g_vars), g_vars)

        ps = self.head(self.features(xs, training=False), training=False)
        pt = self.head(self.features(xt, training=False), training=False)
        return self.update_metrics(loss_a, loss_a / 2, disc_c, ys, ps, yt, pt, {"discrepancy": disc_b})
