"""The two references every comparison needs: no adaptation, and target labels."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, Batch, register
from kerastl.adaptation.catalog import declare

declare("source_only", "SourceOnly",
        "no adaptation: the labelled source only (target images kept out of BN statistics)")
declare("target_oracle", "TargetOracle", "trains on the target's own labels: the upper bound")


@register("source_only")
class SourceOnly(AdaptationModel):
    """Trains on the labelled source only: the baseline adaptation has to beat.

    The target batch is passed in inference mode, so it reaches neither the weights nor
    the BatchNormalization statistics.
    """

    def forward(self, xs, ys, xt, yt):
        fs = self.features(xs, training=True)
        ps = self.head(fs, training=True)
        ft = self.features(xt, training=False)
        pt = self.head(ft, training=False)
        return Batch(xs, ys, xt, yt, fs, ft, ps, pt)


@register("target_oracle")
class TargetOracle(AdaptationModel):
    """Trains on the target's own training labels: the upper bound of adaptation.

    It needs target labels; it is the only method whose loss uses them.
    """

    def forward(self, xs, ys, xt, yt):
        ft = self.features(xt, training=True)
        pt = self.head(ft, training=True)
        fs = self.features(xs, training=False)
        ps = self.head(fs, training=False)
        return Batch(xs, ys, xt, yt, fs, ft, ps, pt)

    def classification_loss(self, batch):
        return tf.reduce_mean(keras.losses.categorical_crossentropy(batch.yt, batch.pt))
