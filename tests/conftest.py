"""Shared fixtures: tiny configs, generated image folders, one trained run for reuse."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import yaml


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    # Rendered syndigits go to a per-session cache, never the user's ~/.cache.
    os.environ["KERASTL_CACHE"] = str(tmp_path_factory.mktemp("cache"))


TINY = {
    "name": "tiny",
    "seed": 0,
    "source": {"dataset": "syndigits", "num_examples": 1500, "cache": True},
    "target": {"dataset": "digits", "labels_per_class": 10},
    "model": {
        "backbone": "MobileNetV3Small",
        "backbone_args": {"alpha": 0.75, "minimalistic": True},
        "input_size": 32,
        "bn_momentum": 0.9,
        "dropout": 0.0,
    },
    "train": {
        "batch_size": 32,
        "report": False,  # the report tests write theirs
        "pretrain": {"epochs": 3, "lr": 0.005},
        "finetune": {"head_epochs": 2, "epochs": 4, "lr": 0.002},
    },
}


def tiny_config(**sections) -> dict:
    """TINY with some sections replaced or updated (None drops a section)."""
    import copy

    cfg = copy.deepcopy(TINY)
    for key, value in sections.items():
        if value is None or not isinstance(value, dict) or not isinstance(cfg.get(key), dict):
            cfg[key] = value
        else:
            cfg[key].update(value)
    return cfg


def write_config(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def tiny_yaml(tmp_path):
    return write_config(tmp_path / "tiny.yaml", TINY)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny pretrain + fine-tune run, shared by the tests that only read a run."""
    from kerastl.config import config_from_dict
    from kerastl.training.job import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = train(config_from_dict(TINY), out=str(out), quiet=True, echo=lambda s: None)
    return result


def tiny_classifier(classes=3, hidden_bn=False):
    """A kerastl classifier handle (image -> nested backbone -> pool -> head) that traces
    fast: what these tests check is about the train steps, not the backbone's size."""
    import keras

    from kerastl.models.factory import assemble_classifier

    b_in = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(b_in)
    for filters in (8, 16):
        x = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    backbone = keras.Model(b_in, x, name="backbone")
    return assemble_classifier(backbone, classes, hidden=[16], hidden_bn=hidden_bn)


def make_image_folder(root, classes=("cat", "dog"), per_class=6, size=24, seed=0):
    """Class folders of solid-colour-ish PNGs that are easy to tell apart."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 30)]
    for i, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            arr = np.clip(np.array(colours[i % 4]) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
            Image.fromarray(arr.astype(np.uint8)).save(d / f"{name}_{j}.png")
    return root
