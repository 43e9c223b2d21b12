"""MME: minimax entropy on the unlabelled target (Saito et al., ICCV 2019)."""

from __future__ import annotations

import tensorflow as tf

from kerastl.adaptation.base import AdaptationModel
from kerastl.adaptation.catalog import declare
from kerastl.models.layers import GradientReversal

declare("mme", "MME", "the head maximises the target's prediction entropy, the features minimise it "
        "(Saito et al. 2019; for a few target labels)")


class MME(AdaptationModel):
    """Minimax entropy (Saito et al., ICCV 2019), made for semi-supervised adaptation.

    The head learns to keep its target predictions uncertain (maximise their entropy:
    class boundaries move towards the target's features) while the features, through a
    gradient reversal layer, learn to make them confident (cluster the target around the
    boundaries). `adapt.weight` is the paper's lambda (0.1). The paper's head is a
    cosine classifier with temperature 0.05; here it is kerastl's head (a Dense softmax
    layer), so that the saved model stays a plain classifier.
    """

    def build_extra(self):
        self.grl = GradientReversal(1.0, name="grl")

    def adaptation_loss(self, batch):
        pt = self.head(self.grl(batch.ft), training=True)
        entropy = tf.reduce_mean(-tf.reduce_sum(pt * tf.math.log(pt + 1e-7), axis=1))
        # loss = classification - weight x entropy: the head ascends the entropy, the
        # reversed gradient makes the features descend it.
        return -entropy, {"target_entropy": entropy}
