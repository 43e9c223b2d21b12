"""Split and domain containers every data source returns, and the deterministic splitting
rules they share (train/val/test carving, few labels per class)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from kerastl.errors import DataError
from kerastl.registry import Registry

# name in `dataset` (or scheme before a colon, or "folder") -> source function; see domain.py.
SOURCES: Registry = Registry("data source")


def source(name: str):
    """Registers a data source `(dataset, data config, seed, origin) -> SourceData`."""
    return SOURCES.register(name)


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
    # With `paths`: True where TensorFlow decodes the file in the input graph (a plain
    # JPEG, see `images.inspect_image`), False where Pillow does; None: Pillow for all.
    in_graph: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> "Split":
        index = np.asarray(index, dtype=np.int64)
        if self.images is not None:
            return Split(labels=self.labels[index], images=self.images[index])
        if self.paths is not None:
            return Split(labels=self.labels[index], paths=[self.paths[i] for i in index],
                         in_graph=None if self.in_graph is None else self.in_graph[index])
        import tensorflow as tf

        keep = np.zeros(len(self.labels), bool)
        keep[index] = True
        keep_t = tf.constant(keep)
        ds = self.dataset.enumerate().filter(lambda i, ex: keep_t[i]).map(lambda i, ex: ex)
        return Split(labels=self.labels[np.sort(index)], dataset=ds)

    def relabel(self, mapping: np.ndarray) -> "Split":
        """The examples whose class `mapping` keeps (mapping[label] >= 0), labelled
        mapping[label]."""
        mapping = np.asarray(mapping, dtype=np.int32)
        kept = self.subset(np.flatnonzero(mapping[self.labels] >= 0))
        if kept.dataset is None:
            return dataclasses.replace(kept, labels=mapping[kept.labels])
        import tensorflow as tf

        table = tf.constant(mapping)
        return Split(labels=mapping[kept.labels], dataset=kept.dataset.map(lambda x, y: (x, tf.gather(table, y))))


@dataclass
class SourceData:
    """What every data source returns: class names, splits, and the (path, reason) of
    every file it could not decode and left out."""

    class_names: list[str]
    splits: dict[str, Split]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # False: images without labels (every label -1), e.g. a folder of target images for
    # adaptation; they have no class names of their own.
    labelled: bool = True


@dataclass
class DomainData:
    name: str
    class_names: list[str]
    splits: dict[str, Split]
    # (path, reason) of every file that could not be decoded and was left out.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    # False: no labels (every label -1; one-hot all zeros): a target for adaptation only,
    # with the source's class names.
    labelled: bool = True

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


def split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int):
    """Stratified, deterministic train/val/test index arrays."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
