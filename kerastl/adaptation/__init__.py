"""Unsupervised domain adaptation: one base model, one module per method.

`catalog` declares the methods and their hyper-parameters without TensorFlow; the names
below import the method modules (and TensorFlow) on first use, so validating a config with
an `adapt` section stays fast.
"""

from kerastl.adaptation.catalog import CATALOG

__all__ = ["CATALOG", "METHODS", "AdaptationModel", "Batch", "build_method"]


def __getattr__(name):
    if name in ("METHODS", "AdaptationModel", "Batch", "build_method"):
        import importlib

        from kerastl.adaptation import base

        for _, spec in CATALOG.items():  # importing each module registers its class
            importlib.import_module(spec.target.split(":")[0])
        return getattr(base, name)
    raise AttributeError(f"module 'kerastl.adaptation' has no attribute {name!r}")
