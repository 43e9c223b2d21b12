"""AdaBN: the target's own BatchNormalization statistics (Li et al., ICLR workshops 2017).

Training changes nothing; afterwards every BN layer's moving mean and variance are
re-estimated on unlabelled target images, so the target is normalised by its own
statistics: source-only training, then re-estimation (`kerastl.models.batchnorm`).
"""

from __future__ import annotations

from kerastl.adaptation.baselines import SourceOnly
from kerastl.adaptation.catalog import declare

declare("adabn", "AdaBN", "source only, then every BN layer's statistics re-estimated on the target (Li et al. 2017)")


class AdaBN(SourceOnly):
    """Source-only training, then BatchNormalization statistics of the target."""

    recalibrates_bn = True
