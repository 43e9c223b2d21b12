"""MCC: minimum class confusion on the unlabelled target (Jin et al., ECCV 2020)."""

from __future__ import annotations

from kerastl.adaptation.base import AdaptationModel
from kerastl.adaptation.catalog import Param, declare
from kerastl.adaptation.losses import class_confusion, global_batch

declare("mcc", "MCC", "minimises the confusion between classes in the target's predictions (Jin et al. 2020)",
        temperature=Param(2.5, "the predictions are softened by this temperature first", 0.01, 100.0))


class MCC(AdaptationModel):
    """Minimum class confusion (Jin et al., ECCV 2020): a non-adversarial loss on the target's
    predictions alone that discourages the classifier from confusing classes on the target
    (TLlib's form; temperature 2.5, weight 1). It needs no extra network."""

    def adaptation_loss(self, batch):
        # A statistic of the whole batch: every replica computes the global batch's loss.
        return class_confusion(global_batch(batch.pt), float(self.hp["temperature"])), {}
