"""Unsupervised domain adaptation: one base model, one module per method."""

from kerastl.adaptation import baselines, cdan, dann, mcd, mdd, statistics, wdgrl  # noqa: F401  (registers)
from kerastl.adaptation.base import METHODS, AdaptationModel, ProgressCallback

__all__ = ["METHODS", "AdaptationModel", "ProgressCallback"]
