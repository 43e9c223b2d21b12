"""Image folders: one sub-folder per class, split on disk or not.

    root/train/<class>/*.jpg, root/test/<class>/*.jpg [, root/val/<class>/*.jpg]
    root/<class>/*.jpg                      (split by val_fraction / test_fraction)
    root/*.jpg                              (no labels: an adaptation target; val_fraction
                                             held back for the label-free selection)

Every file is checked once up front: a file that does not decode is left out, counted and
reported, so that training never dies mid-epoch on it and never skips it silently. Plain
JPEGs are checked at 1/8 scale and later decoded in the input graph by TensorFlow; other
files are decoded in full by Pillow (see `images.inspect_image`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kerastl.data.splits import SourceData, Split, source, split_indices
from kerastl.data.images import IMAGE_EXTENSIONS, inspect_images
from kerastl.errors import DataError

SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _classes(folder: Path, origin: str) -> dict[str, list[str]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{origin}.dataset: {folder} has no class sub-folders; expected "
            f"{folder}/<class name>/<images>"
        )
    files = {}
    for c in classes:
        images = sorted(
            str(p) for p in c.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not images:
            raise DataError(
                f"{origin}.dataset: class folder {c} has no images "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
            )
        files[c.name] = images
    return files


def _to_split(files: dict[str, list[str]], class_names: list[str]) -> tuple[list[str], np.ndarray]:
    paths, labels = [], []
    for i, name in enumerate(class_names):
        paths += files[name]
        labels += [i] * len(files[name])
    return paths, np.asarray(labels, np.int32)


@source("folder")
def folder_splits(root: str, cfg, seed: int, origin: str) -> SourceData:
    folder = Path(os.path.expanduser(root))
    if not folder.is_dir():
        hint = " (built-in datasets: syndigits, digits; TFDS: tfds:NAME)"
        raise DataError(f"{origin}.dataset: {root!r} is not a folder{hint}")
    subdirs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not subdirs and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir() if p.is_file()):
        return _unlabelled(folder, cfg, seed)
    split_layout = "train" in subdirs and set(subdirs) <= set(SPLIT_DIRS)
    raw: dict[str, tuple[list[str], np.ndarray]] = {}
    in_graph: dict[str, bool] = {}
    if split_layout:
        per_split = {SPLIT_DIRS[k]: _classes(p, origin) for k, p in subdirs.items()}
        class_names = sorted(per_split["train"])
        for name, files in per_split.items():
            if sorted(files) != class_names:
                missing = sorted(set(class_names) - set(files))
                extra = sorted(set(files) - set(class_names))
                raise DataError(
                    f"{origin}.dataset: {folder / name} has classes that differ from "
                    f"{folder / 'train'} (missing: {missing or 'none'}, extra: {extra or 'none'})"
                )
            raw[name] = _to_split(files, class_names)
    else:
        files = _classes(folder, origin)
        class_names = sorted(files)
        raw["all"] = _to_split(files, class_names)

    # Check every file once; leave out (and report) the ones that do not decode.
    skipped: list[tuple[str, str]] = []
    for name, (paths, labels) in list(raw.items()):
        checked = inspect_images(paths)
        reasons = [reason for reason, _ in checked]
        in_graph.update((p, fast) for p, (_, fast) in zip(paths, checked))
        keep = np.array([r is None for r in reasons], bool)
        skipped += [(p, r) for p, r in zip(paths, reasons) if r is not None]
        raw[name] = ([p for p, k in zip(paths, keep) if k], labels[keep])

    if not split_layout:
        paths, labels = raw.pop("all")
        idx = split_indices(labels, cfg.val_fraction, cfg.test_fraction, seed)
        for name, index in idx.items():
            raw[name] = ([paths[i] for i in index], labels[index])
    elif "val" not in raw and cfg.val_fraction > 0:
        paths, labels = raw["train"]
        idx = split_indices(labels, cfg.val_fraction, 0.0, seed)
        raw["val"] = ([paths[i] for i in idx["val"]], labels[idx["val"]])
        raw["train"] = ([paths[i] for i in idx["train"]], labels[idx["train"]])

    for i, name in enumerate(class_names):
        if not np.any(raw["train"][1] == i):
            raise DataError(
                f"{origin}.dataset: class {name!r} has no decodable training images in {folder}"
            )
    splits = {k: Split(labels=l, paths=p, in_graph=np.array([in_graph[x] for x in p], bool))
              for k, (p, l) in raw.items() if len(l)}
    return SourceData(class_names, splits, skipped)


def _unlabelled(folder: Path, cfg, seed: int) -> SourceData:
    """Images without class folders: every label -1, `val_fraction` held back (at random)
    for the label-free validators, no test split (nothing could score it)."""
    paths = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    checked = inspect_images(paths)
    skipped = [(p, reason) for p, (reason, _) in zip(paths, checked) if reason is not None]
    kept = [(p, fast) for p, (reason, fast) in zip(paths, checked) if reason is None]
    labels = np.full(len(kept), -1, np.int32)
    idx = split_indices(labels, cfg.val_fraction, 0.0, seed)
    splits = {name: Split(labels=labels[index], paths=[kept[i][0] for i in index],
                          in_graph=np.array([kept[i][1] for i in index], bool))
              for name, index in idx.items() if len(index)}
    return SourceData([], splits, skipped, labelled=False)
