"""The two references every comparison needs: no adaptation, and target labels."""

from __future__ import annotations

import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel, register


@register("source_only")
class SourceOnly(AdaptationModel):
    """Trains on the labelled source only: the baseline adaptation has to beat.

    The target batch is passed in inference mode, so it reaches neither the weights nor
    the BatchNormalization statistics.
    """

    def forward(self, xs, xt, training=True):
        fs = self.features(xs, training=training)
        ps = self.head(fs, training=training)
        ft = self.features(xt, training=False)
        pt = self.head(ft, training=False)
        return fs, ft, ps, pt


@register("target_oracle")
class TargetOracle(AdaptationModel):
    """Trains on the target's own training labels: the upper bound of adaptation.

    It needs target labels; it is the only method whose loss uses them.
    """

    def compute_losses(self, xs, ys, xt, yt):
        ft = self.features(xt, training=True)
        pt = self.head(ft, training=True)
        fs = self.features(xs, training=False)
        ps = self.head(fs, training=False)
        cls = self.classification_loss(yt, pt)
        return fs, ft, ps, pt, cls, tf.constant(0.0), {}
