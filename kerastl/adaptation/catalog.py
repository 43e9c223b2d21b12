"""The domain adaptation methods and their hyper-parameters, without TensorFlow.

Every method is declared here once: its name in YAML (`adapt.method`), where its class
lives, a one-line summary, and each hyper-parameter (`adapt.params`) with its type, default
and valid range. Config validation reads only this module, so a bad `adapt` section fails
in well under a second, before TensorFlow is imported; the method classes take their
defaults from here (`register` in base.py), so there is one place to read them.

Adding a method: one module with a registered `AdaptationModel` subclass, one entry below,
and a config that uses it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from kerastl.registry import Registry


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter: type (bool, int or float), default, inclusive range, meaning."""

    default: Any
    help: str
    low: float | None = None
    high: float | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """`value` converted to the type, or ValueError saying what is allowed."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError("true or false")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("an integer" if self.type is int else "a number")
        if self.type is int and not isinstance(value, int):
            raise ValueError("an integer")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            bounds = (f"between {self.low} and {self.high}" if self.low is not None and self.high is not None
                      else f">= {self.low}" if self.low is not None else f"<= {self.high}")
            raise ValueError(f"{'an integer' if self.type is int else 'a number'} {bounds}")
        return self.type(value)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    target: str  # "module:Class", imported only when the method is built
    summary: str
    params: dict[str, Param] = dataclasses.field(default_factory=dict)

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}

    def check_params(self, given: dict) -> dict:
        """The full parameter dict (defaults + `given`), or KeyError/ValueError(name, allowed)."""
        out = self.defaults()
        for name, value in given.items():
            if name not in self.params:
                raise KeyError(name)
            try:
                out[name] = self.params[name].check(value)
            except ValueError as err:
                raise ValueError(name, str(err)) from None
        return out

    def load(self):
        module, cls = self.target.split(":")
        return getattr(importlib.import_module(module), cls)


CATALOG: Registry[MethodSpec] = Registry("adaptation method")


def declare(name: str, target: str, summary: str, **params: Param) -> MethodSpec:
    return CATALOG.register(name, MethodSpec(name, target, summary, params))


_ADVERSARIAL = {
    "gamma": Param(10.0, "steepness of lambda_p = 2 / (1 + exp(-gamma p)) - 1", 0.0, 1000.0),
    "max_lambda": Param(1.0, "the gradient-reversal coefficient lambda_p is scaled to this", 0.0, 100.0),
    "hidden": Param(1024, "units of the discriminator's two hidden layers", 1, None),
    "dropout": Param(0.5, "dropout after each discriminator hidden layer", 0.0, 0.95),
}

declare("source_only", "kerastl.adaptation.baselines:SourceOnly",
        "no adaptation: the labelled source only (target images kept out of BN statistics)")
declare("target_oracle", "kerastl.adaptation.baselines:TargetOracle",
        "trains on the target's own labels: the upper bound")
declare("dann", "kerastl.adaptation.dann:DANN",
        "a domain discriminator behind a gradient reversal layer (Ganin & Lempitsky 2015)", **_ADVERSARIAL)
declare("cdan", "kerastl.adaptation.cdan:CDAN",
        "the discriminator sees features x predictions (Long et al. 2018)", **_ADVERSARIAL,
        entropy=Param(False, "weight examples by 1 + exp(-entropy) (the cdan+e variant)"))
declare("cdan+e", "kerastl.adaptation.cdan:CDANE",
        "CDAN with entropy conditioning", **_ADVERSARIAL,
        entropy=Param(True, "weight examples by 1 + exp(-entropy)"))
declare("mdd", "kerastl.adaptation.mdd:MDD",
        "margin disparity discrepancy with an adversarial head (Zhang et al. 2019)", **_ADVERSARIAL,
        margin=Param(4.0, "the margin factor gamma of the disparity", 1.0, 100.0))
declare("mcd", "kerastl.adaptation.mcd:MCD",
        "two heads disagree on the target, features make them agree (Saito et al. 2018)",
        num_k=Param(4, "feature-extractor updates per step", 1, 100))
declare("wdgrl", "kerastl.adaptation.wdgrl:WDGRL",
        "a Wasserstein critic with gradient penalty (Shen et al. 2018)",
        critic_steps=Param(5, "critic updates per step", 1, 100),
        critic_lr=Param(1e-3, "the critic's learning rate", 1e-8, 10.0),
        gp_weight=Param(10.0, "weight of the gradient penalty", 0.0, 1000.0),
        hidden=Param(100, "units of the critic's hidden layer", 1, None))
declare("deep_coral", "kerastl.adaptation.statistics:DeepCORAL",
        "matches feature covariances (Sun & Saenko 2016)")
declare("dan", "kerastl.adaptation.statistics:DAN",
        "multi-kernel MMD on features and predictions (Long et al. 2015)",
        kernel_mul=Param(2.0, "ratio between the bandwidths of neighbouring kernels", 1.0, 100.0),
        num_kernels=Param(5, "number of Gaussian kernels", 1, 50),
        on_probabilities=Param(True, "also match the class probabilities"))
