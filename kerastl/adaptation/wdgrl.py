"""WDGRL: minimise a critic's estimate of the Wasserstein distance between domains."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel
from kerastl.adaptation.catalog import Param, declare
from kerastl.adaptation.losses import global_batch
from kerastl.optimizers import make_optimizer
from kerastl.replicas import loss_scaled

declare("wdgrl", "WDGRL", "a Wasserstein critic with gradient penalty (Shen et al. 2018)",
        critic_steps=Param(5, "critic updates per step", 1, 100),
        critic_lr=Param(1e-3, "the critic's learning rate", 1e-8, 10.0),
        gp_weight=Param(10.0, "weight of the gradient penalty", 0.0, 1000.0),
        hidden=Param(100, "units of the critic's hidden layer", 1, None))


class WDGRL(AdaptationModel):
    """Wasserstein distance guided representation learning (Shen et al., AAAI 2018).

    Per step, the critic is trained `critic_steps` times to maximise
    W = E[c(f_s)] - E[c(f_t)] with a gradient penalty (weight `gp_weight`) on
    interpolated features; then the classifier minimises its loss + weight x W.
    """


    def build_extra(self):
        inputs = keras.Input((self.feature_dim,))
        x = keras.layers.Dense(int(self.hp["hidden"]), activation="relu")(inputs)
        out = keras.layers.Dense(1, dtype="float32")(x)
        self.critic = keras.Model(inputs, out, name="critic")
        self.critic_optimizer = loss_scaled(make_optimizer("adam", float(self.hp["critic_lr"])))
        self.critic_optimizer.build(self.critic.trainable_variables)

    def optimizers(self):
        return [*super().optimizers(), self.critic_optimizer]

    def wasserstein(self, fs, ft):
        return tf.reduce_mean(self.critic(fs)) - tf.reduce_mean(self.critic(ft))

    def interpolate(self, fs, ft, i):
        """Random points on the segments between paired source and target features, where
        the gradient penalty is taken. Stateless: every replica draws the same interpolation
        of the same global batch."""
        n = tf.minimum(tf.shape(fs)[0], tf.shape(ft)[0])
        seed = tf.stack([tf.cast(self.critic_optimizer.iterations, tf.int32), i])
        alpha = tf.random.stateless_uniform([n, 1], seed=seed)
        return alpha * fs[:n] + (1.0 - alpha) * ft[:n]

    def critic_loss(self, fs, ft, inter):
        """-W + gp_weight x E[(||grad_x c(x)|| - 1)^2] at the points `inter`: what the critic
        minimises (it maximises W while staying close to 1-Lipschitz)."""
        with tf.GradientTape() as inner:
            inner.watch(inter)
            c = self.critic(inter)
        grad = inner.gradient(c, inter)
        penalty = tf.reduce_mean(tf.square(tf.norm(grad + 1e-12, axis=1) - 1.0))
        return -self.wasserstein(fs, ft) + self.hp["gp_weight"] * penalty

    def train_critic(self, fs, ft):
        fs, ft = tf.cast(tf.stop_gradient(fs), "float32"), tf.cast(tf.stop_gradient(ft), "float32")
        for i in range(int(self.hp["critic_steps"])):
            inter = self.interpolate(fs, ft, i)
            self.minimize(lambda inter=inter: (self.critic_loss(fs, ft, inter), None),
                          self.critic.trainable_variables, self.critic_optimizer)

    def adaptation_loss(self, batch):
        # The critic and the distance see the global batch (see losses.global_batch).
        fs, ft = global_batch(batch.fs), global_batch(batch.ft)
        self.train_critic(fs, ft)
        w = self.wasserstein(fs, ft)
        return w, {"wasserstein": w}
