"""The two references every comparison needs: no adaptation, and target labels."""

from __future__ import annotations

from kerastl.adaptation.base import AdaptationModel
from kerastl.adaptation.catalog import declare

declare("source_only", "SourceOnly", "no adaptation: the labelled source only")
declare("target_oracle", "TargetOracle", "trains on the target's own labels: the upper bound")


class SourceOnly(AdaptationModel):
    """Trains on the labelled source only: the baseline adaptation has to beat.

    Target images reach no loss. Whether they reach the BatchNormalization statistics is
    the run's BN protocol, the same for every method (`adapt.bn_protocol`; `source` keeps
    them out).
    """


class TargetOracle(AdaptationModel):
    """Trains on the target's own training labels: the upper bound of adaptation.

    It needs target labels; it is the only method whose loss uses them.
    """

    def classification_loss(self, batch):
        return self.cross_entropy(batch.yt, batch.pt)
