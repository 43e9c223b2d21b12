"""A domain's data as splits, whatever it came from, and the dispatcher that loads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from kerastl.errors import DataError

BUILTIN = ("syndigits", "digits")


@dataclass
class Split:
    """Labelled examples of one split, held in one of three forms.

    `images` (uint8 N,H,W,C arrays, for in-memory data), `paths` (image files decoded
    lazily by the pipeline) or `dataset` (a tf.data.Dataset of (uint8 image, label), e.g.
    from TFDS). `labels` is always known, so that class counts, class weights and
    few-label subsets need no pass over the images.
    """

    labels: np.ndarray
    images: Optional[np.ndarray] = None
    paths: Optional[list[str]] = None
    dataset: object = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        index = np.asarray(index, dtype=np.int64)
        if self.images is not None:
            return Split(labels=self.labels[index], images=self.images[index])
        if self.paths is not None:
            return Split(labels=self.labels[index], paths=[self.paths[i] for i in index])
        import tensorflow as tf

        keep = np.zeros(len(self.labels), bool)
        keep[index] = True
        keep_t = tf.constant(keep)
        ds = self.dataset.enumerate().filter(lambda i, ex: keep_t[i]).map(lambda i, ex: ex)
        return Split(labels=self.labels[np.sort(index)], dataset=ds)


@dataclass
class DomainData:
    name: str
    class_names: list[str]
    splits: dict[str, Split]
    # (path, reason) of every file that could not be decoded and was left out.
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def take_per_class(labels: np.ndarray, n: int, seed: int, origin: str) -> np.ndarray:
    """Indices of `n` examples per class, chosen deterministically from `seed`."""
    rng = np.random.default_rng(seed + 7919)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n:
            raise DataError(
                f"{origin}.labels_per_class: {n} is more than class {c} has "
                f"({len(idx)} training examples); use at most {len(idx)}"
            )
        chosen.append(rng.choice(idx, n, replace=False))
    return np.sort(np.concatenate(chosen))


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
