"""Validation of config data against the config dataclasses: every value converted to its
key's type and checked against its bounds, then the rules between keys. A mistake is an
`Invalid` (key, value, what is allowed), which `kerastl.config` turns into one
`ConfigError` line naming the file too."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from typing import Any, Literal, Union

log = logging.getLogger("kerastl")


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string",
            dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


class Invalid(Exception):
    def __init__(self, key: str, value: Any, allowed: str):
        super().__init__(key)
        self.key, self.value, self.allowed = key, value, allowed


def _convert(value: Any, tp, key: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise Invalid(key, value, "a mapping")
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise Invalid(key, value, _type_name(tp))
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except Invalid as err:
                if err.key != key:  # an error inside a nested mapping is the real one
                    raise
        raise Invalid(key, value, _type_name(tp))
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise Invalid(key, value, "one of " + _type_name(tp))
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise Invalid(key, value, _type_name(tp))
        return [_convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise Invalid(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(key, value, "a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise Invalid(key, value, "a string")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise Invalid(key, value, "a mapping")
        return value
    raise TypeError(f"unsupported config type {tp!r}")


def _check_bounds(f: dataclasses.Field, value: Any, key: str):
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    meta = f.metadata
    if "min" in meta and value < meta["min"]:
        raise Invalid(key, value, f"a value >= {meta['min']}")
    if meta.get("positive") and not value > 0:
        raise Invalid(key, value, "a value > 0")
    if "range" in meta:
        lo, hi = meta["range"]
        if not lo <= value <= hi:
            raise Invalid(key, value, f"a value between {lo} and {hi}")


def build(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise Invalid(key, value, f"{hint}keys here are: {', '.join(fields)}")
        converted = _convert(value, hints[name], key)
        _check_bounds(fields[name], converted, key)
        kwargs[name] = converted
    # Nested sections given partially keep their own defaults for the rest; a section
    # whose default is a factory (e.g. train.finetune) merges over that default.
    for name, f in fields.items():
        if name in kwargs and dataclasses.is_dataclass(kwargs[name]):
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
                if dataclasses.is_dataclass(default):
                    given = data[name] or {}
                    kwargs[name] = dataclasses.replace(
                        default,
                        **{k: getattr(kwargs[name], k) for k in given},
                    )
    return cls(**kwargs)


def cross_checks(cfg):
    """Constraints between keys."""
    for section in ("source", "target"):
        data = getattr(cfg, section)
        if data is None:
            continue
        if data.val_fraction + data.test_fraction >= 1.0:
            raise Invalid(
                f"{section}.test_fraction",
                data.test_fraction,
                f"val_fraction + test_fraction < 1 (val_fraction is {data.val_fraction})",
            )
        if not data.dataset:
            raise Invalid(f"{section}.dataset", data.dataset, "a non-empty name or path")
    for stage in ("pretrain", "finetune"):
        st = getattr(cfg.train, stage)
        if st.warmup_epochs > st.head_epochs + st.epochs:
            raise Invalid(
                f"train.{stage}.warmup_epochs",
                st.warmup_epochs,
                f"at most head_epochs + epochs ({st.head_epochs + st.epochs})",
            )
    if cfg.adapt is None and cfg.train.finetune.head_epochs + cfg.train.finetune.epochs == 0:
        raise Invalid(
            "train.finetune.epochs", 0, "at least one epoch of head_epochs + epochs"
        )
    if cfg.adapt is not None:
        from kerastl.adaptation.catalog import CATALOG  # no TensorFlow: validating stays fast

        if cfg.adapt.method not in CATALOG:
            raise Invalid("adapt.method", cfg.adapt.method, "one of " + ", ".join(CATALOG.names()))
        cfg.adapt.method = CATALOG.canonical(cfg.adapt.method)
        if cfg.source is None:
            raise Invalid("source", None, "a labelled source domain: adaptation needs one")
        method_params(cfg.adapt.method, cfg.adapt.params)
        if cfg.train.batch_size < 2:
            raise Invalid("train.batch_size", cfg.train.batch_size, "at least 2 (half source, half target)")
        for section in ("source", "target"):
            mixing = [name for name in (getattr(cfg, section).augment or {})
                      if str(name).lower().replace("_", "").replace("-", "") in ("mixup", "cutmix")]
            if mixing:
                raise Invalid(f"{section}.augment.{mixing[0]}", getattr(cfg, section).augment[mixing[0]],
                              "no mixup or cutmix with an adapt section: they mix labels, which adaptation's "
                              "target has not (use them for fine-tuning, without adapt)")
        if cfg.adapt.epochs is not None and cfg.adapt.steps is not None:
            raise Invalid("adapt.epochs", cfg.adapt.epochs,
                           f"null while adapt.steps is set ({cfg.adapt.steps}): the budget is one or the "
                           "other (e.g. --set adapt.steps=null to count epochs)")
    dist = cfg.distribute
    if dist.cpu_devices is not None and dist.strategy in ("multi_worker", "tpu"):
        raise Invalid("distribute.cpu_devices", dist.cpu_devices,
                       "null with strategy " + dist.strategy + " (it splits this process's CPU for "
                       "mirrored, one_device, default or auto)")
    if dist.devices is not None and dist.strategy not in ("mirrored", "one_device"):
        raise Invalid("distribute.devices", dist.devices, "only with strategy mirrored or one_device")
    if dist.strategy == "one_device" and dist.devices is not None and len(dist.devices) != 1:
        raise Invalid("distribute.devices", dist.devices, "exactly one device for one_device")
    if isinstance(cfg.model.unfreeze, int) and cfg.model.unfreeze < 0:
        raise Invalid("model.unfreeze", cfg.model.unfreeze, "'all', 'none', N >= 0 or a layer name")


def method_params(method: str, params: dict) -> dict:
    """A method's full hyper-parameters (catalog defaults + `params`), or Invalid."""
    from kerastl.adaptation.catalog import CATALOG, ParamError

    try:
        return CATALOG.get(method).validated(params)
    except ParamError as err:
        raise Invalid(f"adapt.params.{err.key}", err.value, err.allowed) from None


def warn_unused(data: dict, origin: str):
    """Keys that are valid on their own but unused with the others given: said, not ignored."""
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if data.get("adapt") is not None:
        unused = [f"train.{stage}" for stage in ("pretrain", "finetune") if train.get(stage) is not None]
        if unused:
            log.warning("%s: %s not used: with an adapt section, adaptation replaces pretraining and "
                        "fine-tuning (its schedule is adapt.epochs, adapt.lr, adapt.optimizer)",
                        origin, " and ".join(unused) + (" are" if len(unused) > 1 else " is"))
