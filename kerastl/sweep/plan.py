"""What a sweep runs: its configs, its trials, and the space their values are drawn from.

A sweep is given one or more configs (each usually one method's) that share their data.
Trial i runs config i mod (number of configs) with seed `seed + i`; every trial keeps the
data split of the first config (`split_seed`), so all of them are scored and tested on the
same images. A space file adds values drawn per trial (Optuna's sampler):

    adapt.lr: {low: 0.003, high: 0.03, log: true}      # a float range (log scale)
    adapt.params.max_lambda: {low: 0.1, high: 1.0}
    model.dropout: [0.1, 0.2, 0.3]                       # a list: one of these
    adapt.params.margin: declared                        # the range the method declares

An `adapt.params.<name>` key applies only to the trials whose method has that parameter.
No optuna import here: a bad sweep is refused before anything heavy loads.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from kerastl.config import config_from_dict, dump_config, load_config
from kerastl.configfile import apply_overrides, parse_yaml
from kerastl.errors import ConfigError

RESERVED = ("seed", "split_seed", "name")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One key of the search space: a list of choices, or a numeric range."""

    key: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    declared: bool = False

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.low, bool)

    def for_method(self, method: str) -> "Dimension | None":
        """This dimension as it applies to a trial of `method` (None: it does not apply)."""
        if not self.key.startswith("adapt.params."):
            return self
        from kerastl.adaptation.catalog import CATALOG

        spec = CATALOG.get(method)
        name = self.key.split(".", 2)[2]
        if name not in spec.params:
            return None
        if not self.declared:
            return self
        param = spec.params[name]
        if param.type is bool:
            return dataclasses.replace(self, choices=(False, True), declared=False)
        return dataclasses.replace(self, low=param.type(param.low), high=param.type(param.high), declared=False)

    def optuna_name(self, method: str) -> str:
        """Declared ranges differ per method, and Optuna keeps one range per name."""
        return f"{self.key}@{method}" if self.declared else self.key


def parse_space(data: Any, origin: str) -> list[Dimension]:
    """The dimensions of a space file's mapping; ConfigError naming the file and key."""
    from kerastl.adaptation.catalog import CATALOG

    if data is None:
        return []
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a search space is a mapping of config keys to ranges or lists, "
                          f"e.g. 'adapt.lr: {{low: 0.003, high: 0.03, log: true}}'")
    dims = []
    for key, spec in data.items():
        where = f"{origin}: {key}"
        if not isinstance(key, str) or key in RESERVED or key.split(".")[0] in RESERVED:
            raise ConfigError(f"{where}: the sweep sets seed, split_seed and name itself; search other keys")
        if key == "adapt.method":
            raise ConfigError(f"{where}: give each method its own config (kerastl sweep A.yaml B.yaml ...) "
                              "instead of searching adapt.method")
        if spec == "declared":
            name = key.split(".", 2)[2] if key.startswith("adapt.params.") else None
            owners = [m for m, s in CATALOG.items() if name in s.params]
            if not owners:
                raise ConfigError(f"{where}: 'declared' is for adapt.params.<name> of a method parameter; "
                                  "no method declares that one (see `kerastl methods`)")
            for method in owners:
                p = CATALOG.get(method).params[name]
                if p.type is not bool and (p.low is None or p.high is None):
                    raise ConfigError(f"{where}: {method} declares {name} without an upper and lower bound; "
                                      "give the range: {low: ..., high: ...}")
            dims.append(Dimension(key, declared=True))
        elif isinstance(spec, list):
            if not spec:
                raise ConfigError(f"{where}: an empty list; give the values to choose from")
            dims.append(Dimension(key, choices=tuple(spec)))
        elif isinstance(spec, dict):
            unknown = set(spec) - {"low", "high", "log"}
            if unknown or "low" not in spec or "high" not in spec:
                raise ConfigError(f"{where}: {spec!r}: a range is {{low: L, high: H}} with optional log: true "
                                  f"(unknown: {sorted(unknown)})" if unknown else
                                  f"{where}: {spec!r}: a range needs both low and high")
            low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
                raise ConfigError(f"{where}: low {low!r} and high {high!r} must be numbers with low < high")
            if log and low <= 0:
                raise ConfigError(f"{where}: a log range needs low > 0 (got {low})")
            dims.append(Dimension(key, low=low, high=high, log=log))
        else:
            raise ConfigError(f"{where}: {spec!r} is not a range ({{low: L, high: H}}), a list or 'declared'")
    return dims


def read_space(path: str | Path | None) -> tuple[dict, list[Dimension]]:
    """(the file's mapping, its dimensions); ({}, []) without a file."""
    if path is None:
        return {}, []
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"--space {path}: no such file")
    data = parse_yaml(p.read_text(encoding="utf-8"), str(p))
    return data or {}, parse_space(data, str(p))


@dataclasses.dataclass
class Plan:
    """A sweep's definition, as recorded in SWEEP/sweep.yaml (and checked by every process
    that joins it): the resolved configs by name, the trial budget, the space."""

    configs: dict[str, dict]  # name -> resolved config data (split_seed fixed)
    trials: int
    space: dict = dataclasses.field(default_factory=dict)

    @property
    def dimensions(self) -> list[Dimension]:
        return parse_space(self.space, "sweep.yaml: space")

    @property
    def base_seed(self) -> int:
        return int(next(iter(self.configs.values()))["seed"])

    def fingerprint(self) -> str:
        """Equal for two plans that would run the same trials."""
        text = json.dumps({"configs": self.configs, "trials": self.trials, "space": self.space}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def planned(self, i: int) -> dict:
        """Trial i's fixed values: its config and its seed."""
        names = list(self.configs)
        return {"config": names[i % len(names)], "seed": self.base_seed + i}

    def method(self, config: str) -> str | None:
        adapt = self.configs[config].get("adapt")
        return adapt["method"] if adapt else None

    def to_yaml(self) -> str:
        return yaml.safe_dump({"trials": self.trials, "space": self.space, "configs": self.configs},
                              sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, origin: str) -> "Plan":
        data = parse_yaml(text, origin)
        return cls(configs=data["configs"], trials=int(data["trials"]), space=data.get("space") or {})

    def trial_config(self, config: str, seed: int, values: dict[str, Any]):
        """The validated Config of one trial: its config, its seed, its drawn values."""
        data = copy.deepcopy(self.configs[config])
        data["seed"] = seed
        for key, value in values.items():
            apply_overrides(data, [f"{key}={json.dumps(value)}"])
        return config_from_dict(data, f"sweep trial ({config}, seed {seed}, {values})")


def make_plan(config_paths: list[str], overrides: list[str], trials: int, space_path: str | None) -> Plan:
    """The plan of `kerastl sweep CONFIG... --set ... --trials N --space FILE`, validated:
    every config loads, all share their data sections, and every value of the space (its
    ends, each choice) makes a valid config for every trial it applies to."""
    if not config_paths:
        raise ConfigError("kerastl sweep needs at least one config (one per method to try)")
    loaded = {}
    for path in config_paths:
        cfg = load_config(path, list(overrides))
        if cfg.adapt is None or cfg.source is None:
            raise ConfigError(f"{path}: a sweep runs domain adaptation; this config has no "
                              f"{'adapt' if cfg.adapt is None else 'source'} section")
        name = Path(path).stem
        if name in loaded:
            raise ConfigError(f"{path}: two configs named {name!r}; a sweep tells its configs apart by file name")
        loaded[name] = cfg
    first_name, first = next(iter(loaded.items()))
    for name, cfg in loaded.items():
        for section in ("source", "target"):
            if getattr(cfg, section) != getattr(first, section):
                raise ConfigError(f"{name} and {first_name} differ in their {section} section; the trials of a "
                                  "sweep must share their data (put the difference in a config both use as base:)")
    split_seed = first.data_seed
    configs = {}
    for name, cfg in loaded.items():
        data = yaml.safe_load(dump_config(cfg))
        data["split_seed"] = split_seed
        configs[name] = data
    raw_space, _ = read_space(space_path)
    plan = Plan(configs=configs, trials=trials, space=raw_space)
    for dim in plan.dimensions:
        applies = False
        for name in configs:
            method = plan.method(name)
            d = dim.for_method(method)
            if d is None:
                continue
            applies = True
            for value in (d.choices or (d.low, d.high)):
                try:
                    plan.trial_config(name, plan.base_seed, {dim.key: value})
                except ConfigError as err:
                    raise ConfigError(f"--space {space_path}: {dim.key}: the value {value!r} makes {name} "
                                      f"invalid: {err}") from None
        if not applies:
            raise ConfigError(f"--space {space_path}: {dim.key} applies to none of the configs' methods "
                              f"({', '.join(str(plan.method(n)) for n in configs)})")
    return plan
