"""The dispatcher that loads a domain's data as splits, whatever it came from."""

from __future__ import annotations

from kerastl.data.splits import DomainData, take_per_class
from kerastl.errors import DataError

BUILTIN = ("syndigits", "digits")


def load_domain(cfg, seed: int, origin: str) -> DomainData:
    """Loads the `source` or `target` section `cfg`; `origin` names it in errors."""
    name = cfg.dataset
    if name in BUILTIN:
        from kerastl.data.builtin import builtin_splits

        class_names, splits = builtin_splits(name, cfg, seed)
        skipped: list = []
    elif name.startswith("tfds:"):
        from kerastl.data.tfds_source import tfds_splits

        class_names, splits = tfds_splits(name[5:], cfg, seed, origin)
        skipped = []
    else:
        from kerastl.data.folder import folder_splits

        class_names, splits, skipped = folder_splits(name, cfg, seed, origin)
    if len(class_names) < 2:
        raise DataError(
            f"{origin}.dataset: {name!r} has {len(class_names)} class ({class_names}); "
            "a classifier needs at least 2 classes"
        )
    if "train" not in splits or len(splits["train"]) == 0:
        raise DataError(f"{origin}.dataset: {name!r} has no training examples")
    if cfg.labels_per_class:
        index = take_per_class(splits["train"].labels, cfg.labels_per_class, seed, origin)
        splits["train"] = splits["train"].subset(index)
    return DomainData(name=name, class_names=list(class_names), splits=splits, skipped=skipped)
