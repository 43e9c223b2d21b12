"""Unsupervised domain adaptation: one base model, one module per method.

`catalog` declares the methods and their hyper-parameters without TensorFlow; the names
below import the method modules (and TensorFlow) on first use, so validating a config with
an `adapt` section stays fast.
"""

from kerastl.adaptation.catalog import CATALOG

__all__ = ["CATALOG", "AdaptationModel", "Batch", "build_method"]


def __getattr__(name):
    if name in ("AdaptationModel", "Batch", "build_method"):
        from kerastl.adaptation import base

        return getattr(base, name)
    raise AttributeError(f"module 'kerastl.adaptation' has no attribute {name!r}")
