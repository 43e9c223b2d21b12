"""The dispatcher that loads a domain's data as splits, whatever it came from.

Data sources are registered in `splits.SOURCES` under the name a config's `dataset` uses: a
built-in name (`syndigits`, `digits`), a scheme before a colon (`tfds:NAME`), or `folder`
for everything else (a path). Each source is a function
`(dataset, data config, seed, origin) -> SourceData`; adding one is a module with a
registered function, listed in `_SOURCE_MODULES`.
"""

from __future__ import annotations

import importlib

import numpy as np

from kerastl.data.splits import SOURCES, DomainData, take_per_class
from kerastl.errors import DataError

_SOURCE_MODULES = ("kerastl.data.builtin", "kerastl.data.shifted", "kerastl.data.tfds_source", "kerastl.data.folder")


def _find_source(dataset: str):
    for module in _SOURCE_MODULES:  # importing a source module registers its sources
        importlib.import_module(module)
    scheme, sep, rest = dataset.partition(":")
    if sep and scheme in SOURCES and len(scheme) > 1:  # `C:\data` is a path, not a scheme
        return SOURCES.get(scheme), rest
    if dataset in SOURCES and dataset != "folder":
        return SOURCES.get(dataset), dataset
    return SOURCES.get("folder"), dataset


def load_domain(cfg, seed: int, origin: str) -> DomainData:
    """Loads the `source` or `target` section `cfg`; `origin` names it in errors."""
    name = cfg.dataset
    load, argument = _find_source(name)
    data = load(argument, cfg, seed, origin)
    class_names, splits = data.class_names, data.splits
    if not data.labelled:
        if cfg.classes:
            raise DataError(f"{origin}.classes: {name!r} has no labels (no class sub-folders), so no classes to "
                            "keep; remove classes or give the folder class sub-folders")
        if cfg.labels_per_class:
            raise DataError(f"{origin}.labels_per_class: {name!r} has no labels (no class sub-folders); "
                            "remove labels_per_class or give the folder class sub-folders")
        if "train" not in splits:
            raise DataError(f"{origin}.dataset: {name!r} has no training images")
        return DomainData(name=name, class_names=[], splits=splits, skipped=data.skipped, labelled=False)
    if len(class_names) < 2:
        raise DataError(
            f"{origin}.dataset: {name!r} has {len(class_names)} class ({class_names}); "
            "a classifier needs at least 2 classes"
        )
    if cfg.classes:
        class_names, splits = keep_classes(class_names, splits, cfg.classes, f"{origin}.classes", name)
    if "train" not in splits or len(splits["train"]) == 0:
        raise DataError(f"{origin}.dataset: {name!r} has no training examples")
    if cfg.labels_per_class:
        index = take_per_class(splits["train"].labels, cfg.labels_per_class, seed, origin)
        # `pool`: every training image, for adaptation's unlabelled target stream (its
        # labels are not used); `train`: the few labelled ones.
        splits["pool"] = splits["train"]
        splits["train"] = splits["train"].subset(index)
    return DomainData(name=name, class_names=list(class_names), splits=splits, skipped=data.skipped)


def keep_classes(class_names: list, splits: dict, keep: list, key: str, name: str) -> tuple[list, dict]:
    """(`keep`, every split with only the examples of those classes, numbered in `keep`'s
    order); a DataError naming `key` when a class is not among `class_names` or repeats."""
    missing = [c for c in keep if c not in class_names]
    if missing:
        raise DataError(f"{key}: {missing} not among the classes of {name!r}: "
                        f"{class_names[:20]}{'...' if len(class_names) > 20 else ''}")
    if len(set(keep)) != len(keep):
        raise DataError(f"{key}: {[c for c in keep if keep.count(c) > 1][0]!r} is listed twice")
    if len(keep) < 2:
        raise DataError(f"{key}: {keep} keeps {len(keep)} class; a classifier needs at least 2")
    mapping = np.full(len(class_names), -1, np.int32)
    mapping[[class_names.index(c) for c in keep]] = np.arange(len(keep))
    kept = {split: s.relabel(mapping) for split, s in splits.items()}
    return list(keep), {split: s for split, s in kept.items() if len(s)}


def onto_classes(domain: DomainData, class_names: list, what: str) -> DomainData:
    """Labelled `domain` numbered by `class_names` (a model's outputs), its classes matched by
    name; some of them may be missing. A DataError naming `what` when it has a class they lack."""
    if domain.class_names == class_names:
        return domain
    unknown = [c for c in domain.class_names if c not in class_names]
    if unknown:
        raise DataError(f"{what} {domain.name}: classes {unknown[:10]} are not among the run's classes "
                        f"{class_names[:12]}{'...' if len(class_names) > 12 else ''} (labels.txt)")
    mapping = np.asarray([class_names.index(c) for c in domain.class_names])
    splits = {name: split.relabel(mapping) for name, split in domain.splits.items()}
    return DomainData(name=domain.name, class_names=list(class_names), splits=splits, skipped=domain.skipped)
