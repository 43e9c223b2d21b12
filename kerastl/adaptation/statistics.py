"""Statistic matching: align the moments or kernel embeddings of the two domains."""

from __future__ import annotations

import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel
from kerastl.adaptation.catalog import Param, declare
from kerastl.adaptation.losses import global_batch

declare("deep_coral", "DeepCORAL", "matches feature covariances (Sun & Saenko 2016)")
declare("dan", "DAN", "multi-kernel MMD on features and predictions (Long et al. 2015)",
        kernel_mul=Param(2.0, "ratio between the bandwidths of neighbouring kernels", 1.0, 100.0),
        num_kernels=Param(5, "number of Gaussian kernels", 1, 50),
        on_probabilities=Param(True, "also match the class probabilities"))


def coral(fs, ft):
    """Mean squared difference of the feature means plus that of the covariances.

    This is the form TLlib's and DomainBed's CORAL use. Sun & Saenko's ||C_s - C_t||_F^2 /
    (4 d^2) is a quarter of the covariance term and, with hundreds of feature dimensions,
    orders of magnitude smaller than the classification loss, while the paper asks for terms
    of comparable size; a mean shift alone also counts here.
    """
    def cov(f):
        n = tf.cast(tf.shape(f)[0], tf.float32)
        centred = f - tf.reduce_mean(f, axis=0, keepdims=True)
        return tf.matmul(centred, centred, transpose_a=True) / tf.maximum(n - 1.0, 1.0)

    mean_diff = tf.reduce_mean(tf.square(tf.reduce_mean(fs, axis=0) - tf.reduce_mean(ft, axis=0)))
    return mean_diff + tf.reduce_mean(tf.square(cov(fs) - cov(ft)))


def mk_mmd(fs, ft, kernel_mul: float = 2.0, num_kernels: int = 5):
    """Multi-kernel MMD^2 with Gaussian kernels around the mean pairwise distance.

    The biased quadratic estimate over the batch, as in Long et al. (ICML 2015).
    """
    x = tf.concat([fs, ft], axis=0)
    sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
    d2 = tf.maximum(sq - 2.0 * tf.matmul(x, x, transpose_b=True) + tf.transpose(sq), 0.0)
    n = tf.cast(tf.shape(x)[0], tf.float32)
    bandwidth = tf.stop_gradient(tf.reduce_sum(d2) / (n * n - n))
    bandwidth = bandwidth / (kernel_mul ** (num_kernels // 2))
    k = tf.add_n([tf.exp(-d2 / (bandwidth * kernel_mul**i + 1e-8)) for i in range(num_kernels)])
    ns = tf.shape(fs)[0]
    kss, ktt, kst = k[:ns, :ns], k[ns:, ns:], k[:ns, ns:]
    return tf.reduce_mean(kss) + tf.reduce_mean(ktt) - 2.0 * tf.reduce_mean(kst)


class DeepCORAL(AdaptationModel):
    """Deep CORAL (Sun & Saenko, ECCV 2016 workshops): match feature covariances."""


    def adaptation_loss(self, batch):
        # Every replica computes the loss of the global batch.
        return coral(global_batch(batch.fs), global_batch(batch.ft)), {}


class DAN(AdaptationModel):
    """Deep adaptation network (Long et al., ICML 2015): multi-kernel MMD on features
    and on the class probabilities."""


    def adaptation_loss(self, batch):
        mul, k = float(self.hp["kernel_mul"]), int(self.hp["num_kernels"])
        loss = mk_mmd(global_batch(batch.fs), global_batch(batch.ft), mul, k)
        if self.hp["on_probabilities"]:
            loss += mk_mmd(global_batch(batch.ps), global_batch(batch.pt), mul, k)
        return loss, {}
