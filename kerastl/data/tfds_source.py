"""TFDS datasets by name (`tfds:tf_flowers`), and `tfds:image_folder` (tfds.ImageFolder)."""

from __future__ import annotations

import numpy as np

from kerastl.data.splits import SourceData, Split, source
from kerastl.errors import DataError

# TFDS split names that kerastl's splits are read from, in order of preference.
_SPLIT_NAMES = {"train": ["train"], "val": ["validation", "val"], "test": ["test"]}


def _builder(name: str, cfg, origin: str):
    import tensorflow_datasets as tfds

    if name == "image_folder":
        if not cfg.data_dir:
            raise DataError(
                f"{origin}.data_dir: tfds:image_folder needs data_dir, the folder holding "
                "train/ and test/ sub-folders of class folders"
            )
        return tfds.ImageFolder(cfg.data_dir)
    try:
        builder = tfds.builder(name, data_dir=cfg.data_dir)
    except Exception as err:  # unknown name: tfds raises its own DatasetNotFoundError
        raise DataError(f"{origin}.dataset: tfds:{name}: {err}".split("\n")[0]) from None
    try:
        builder.download_and_prepare()
    except Exception as err:
        raise DataError(
            f"{origin}.dataset: tfds:{name} is not prepared in "
            f"{cfg.data_dir or '~/tensorflow_datasets'} and could not be downloaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "Prepare it on a machine with internet access (tfds build) and point "
            "data_dir at it."
        ) from None
    return builder


@source("tfds")
def tfds_splits(name: str, cfg, seed: int, origin: str) -> SourceData:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = _builder(name, cfg, origin)
    info = builder.info
    keys = list(info.supervised_keys or ())
    if len(keys) != 2 or "label" not in str(keys[1]):
        label_key = "label"
    else:
        label_key = keys[1]
    image_key = keys[0] if keys else "image"
    feature = info.features[label_key]
    class_names = list(getattr(feature, "names", []) or [])
    if not class_names:
        raise DataError(f"{origin}.dataset: tfds:{name} has no class-label feature")

    available = list(info.splits.keys())
    chosen: dict[str, str] = {}
    for ours, theirs in _SPLIT_NAMES.items():
        for t in theirs:
            if t in available:
                chosen[ours] = t
                break
    if "train" not in chosen:
        raise DataError(f"{origin}.dataset: tfds:{name} has no 'train' split ({available})")
    # Carve what the dataset lacks from its train split, by TFDS percent slicing.
    val_pct = int(round(cfg.val_fraction * 100))
    test_pct = int(round(cfg.test_fraction * 100))
    spec = {"train": chosen["train"]}
    if "test" in chosen:
        spec["test"] = chosen["test"]
    else:
        spec["test"] = f"train[:{test_pct}%]"
        spec["train"] = f"train[{test_pct}%:]"
    if "val" in chosen:
        spec["val"] = chosen["val"]
    elif val_pct > 0:
        start = 0 if "test" in chosen else test_pct
        spec["val"] = f"train[{start}%:{start + val_pct}%]"
        spec["train"] = f"train[{start + val_pct}%:]"

    splits = {}
    for ours, split in spec.items():
        ds = builder.as_dataset(split=split, shuffle_files=False)
        ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
        # Labels only: skip decoding the images for this pass.
        undecoded = builder.as_dataset(
            split=split, shuffle_files=False,
            decoders={image_key: tfds.decode.SkipDecoding()},
        )
        labels = np.fromiter(
            undecoded.map(lambda ex: ex[label_key]).as_numpy_iterator(), dtype=np.int32
        )
        if len(labels):
            splits[ours] = Split(labels=labels, dataset=ds)
    return SourceData(list(class_names), splits)
