"""CDAN and CDAN+E: the discriminator sees features conditioned on predictions."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import global_sum
from kerastl.adaptation.catalog import ADVERSARIAL, Param, declare
from kerastl.adaptation.dann import DANN

declare("cdan", "CDAN", "the discriminator sees features x predictions (Long et al. 2018)", **ADVERSARIAL,
        entropy=Param(False, "weight examples by 1 + exp(-entropy) (the cdan+e variant)"),
        random_dim=Param(0, "0: the exact features x classes map; N: a randomized map of N dims "
                            "(the paper uses 1024 when features x classes > 4096)", 0, 65536))
declare("cdan+e", "CDANE", "CDAN with entropy conditioning", **ADVERSARIAL,
        entropy=Param(True, "weight examples by 1 + exp(-entropy)"),
        random_dim=Param(0, "0: the exact features x classes map; N: a randomized map of N dims "
                            "(the paper uses 1024 when features x classes > 4096)", 0, 65536))


class CDAN(DANN):
    """Conditional adversarial domain adaptation (Long et al., NeurIPS 2018).

    The discriminator's input is the multilinear map f (x) g: the outer product of
    features and class probabilities, flattened. With `entropy: true` (the `cdan+e`
    method), each example is weighted by 1 + exp(-H(g)), so confident predictions count
    more, normalised within each domain over the global batch (all replicas). Above a few
    thousand dimensions the paper replaces the map by a randomized one (`random_dim`).
    """


    def build_extra(self):
        dim = int(self.hp["random_dim"])
        if dim:
            # Fixed Gaussian projections (model variables: checkpointed, equal on every replica).
            gaussian = keras.initializers.RandomNormal(stddev=1.0)
            self.random_f = self.add_weight(name="random_f", shape=(self.feature_dim, dim), initializer=gaussian,
                                            trainable=False)
            self.random_g = self.add_weight(name="random_g", shape=(self.num_classes, dim), initializer=gaussian,
                                            trainable=False)
        super().build_extra()

    def discriminator_input_dim(self) -> int:
        return int(self.hp["random_dim"]) or self.feature_dim * self.num_classes

    def discriminator_input(self, f, p):
        p = tf.stop_gradient(p)
        dim = int(self.hp["random_dim"])
        if dim:  # (f R_f) * (g R_g) / sqrt(dim): an unbiased estimate of the map's inner products
            return tf.matmul(f, self.random_f) * tf.matmul(p, self.random_g) / float(dim) ** 0.5
        outer = tf.einsum("bi,bj->bij", p, f)
        return tf.reshape(outer, [-1, self.feature_dim * self.num_classes])

    def sample_weights(self, batch, p, n_source):
        if not self.hp["entropy"]:
            return None
        entropy = -tf.reduce_sum(p * tf.math.log(p + 1e-5), axis=1)
        w = 1.0 + tf.exp(-tf.stop_gradient(entropy))
        ws, wt = w[:n_source], w[n_source:]
        return tf.concat([ws / global_sum(tf.reduce_sum(ws)), wt / global_sum(tf.reduce_sum(wt))], axis=0)


class CDANE(CDAN):
    """CDAN with entropy conditioning (Long et al., NeurIPS 2018)."""

