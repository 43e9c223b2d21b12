"""DANN: a domain discriminator behind a gradient reversal layer."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, grl_lambda, weighted_mean
from kerastl.adaptation.catalog import ADVERSARIAL, declare
from kerastl.models.layers import GradientReversal

declare("dann", "DANN", "a domain discriminator behind a gradient reversal layer (Ganin & Lempitsky 2015)",
        **ADVERSARIAL)


def discriminator(input_dim: int, hidden: int, name: str, outputs: int = 1, dropout: float = 0.5) -> keras.Model:
    inputs = keras.Input((input_dim,))
    x = keras.layers.Dense(hidden, activation="relu")(inputs)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    out = keras.layers.Dense(outputs, dtype="float32")(x)
    return keras.Model(inputs, out, name=name)


def domain_loss(d_logits, n_source, weights=None):
    """Binary cross-entropy of source (1) vs target (0), and the discriminator accuracy.

    `weights`, when given, weight the examples (normalised over the global batch).
    """
    n = tf.shape(d_logits)[0]
    labels = tf.concat([tf.ones([n_source, 1]), tf.zeros([n - n_source, 1])], axis=0)
    loss = keras.losses.binary_crossentropy(labels, d_logits, from_logits=True)
    acc = tf.reduce_mean(tf.cast(tf.equal(tf.cast(d_logits > 0, tf.float32), labels), tf.float32))
    if weights is None:
        return tf.reduce_mean(loss), acc
    return weighted_mean(loss, weights), acc


class DANN(AdaptationModel):
    """Domain-adversarial training (Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016).

    A discriminator learns to tell source features from target features; the gradient
    reversal layer makes the feature extractor learn to fool it. Its coefficient follows
    lambda_p = 2 / (1 + exp(-gamma p)) - 1, scaled to `max_lambda`, where p is the
    training progress.
    """

    def build_extra(self):
        self.grl = GradientReversal(0.0, name="grl")
        self.discriminator = discriminator(self.discriminator_input_dim(), int(self.hp["hidden"]), "discriminator",
                                           dropout=float(self.hp["dropout"]))

    def discriminator_input_dim(self) -> int:
        return self.feature_dim

    def discriminator_input(self, f, p):
        return f

    def extra_variables(self):
        return self.discriminator.trainable_variables

    def current_lambda(self):
        return grl_lambda(self.progress, self.hp["gamma"], self.hp["max_lambda"])

    def sample_weights(self, batch, p, n_source):
        """Weights of the discriminator's examples (source rows, then target rows), or None
        for equal weights; `p` holds their class probabilities."""
        return None

    def adaptation_loss(self, batch):
        lam = self.current_lambda()
        self.grl.coefficient.assign(lam)
        f = tf.concat([batch.fs, batch.ft], axis=0)
        p = tf.concat([batch.ps, batch.pt], axis=0)
        d = self.discriminator(self.grl(self.discriminator_input(f, p)), training=True)
        n_source = tf.shape(batch.fs)[0]
        loss, acc = domain_loss(d, n_source, self.sample_weights(batch, p, n_source))
        return loss, {"domain_accuracy": acc, "lambda": lam}
