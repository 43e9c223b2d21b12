"""kerastl's input pipeline on a folder of 640x480 JPEGs at 224 px: the up-front check of
every file, decode + resize + the default augmentation uncached (images per second, all
cores), against what a MobileNetV3Small training step at 224 px consumes (batch 32), and
the peak memory at 1x, 4x and 16x the files of the in-memory cache (the default under
`cache_memory_mb`) and of streaming (decoded every epoch: above it, or `cache: false`).

    python benchmarks/perf/jpeg_pipeline.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import default_config, photo_folder, timed_fit


def jpeg_pipeline(quick: bool) -> dict:
    """kerastl's input pipeline on a folder of 640x480 JPEGs at 224 px: the up-front check of
    every file, decode + resize + the default augmentation uncached (images per second, all
    cores), against what a MobileNetV3Small training step at 224 px consumes (batch 32), and
    the peak memory at 1x, 4x and 16x the files of the in-memory cache (the default under
    `cache_memory_mb`) and of streaming (decoded every epoch: above it, or `cache: false`)."""
    import dataclasses
    import subprocess
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.config import DataConfig
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    n = 400 if quick else 2000
    out = {"files": n, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = photo_folder(tmp, n)
        out["make_folder_s"] = time.perf_counter() - start
        start = time.perf_counter()
        # kerastl's image-folder loader: the up-front check of every file.
        domain = load_domain(DataConfig(dataset=tmp, val_fraction=0.0, test_fraction=0.0), 0, "bench")
        out["check_ms_per_file"] = 1000 * (time.perf_counter() - start) / n
        split = domain.splits["train"]
        out["decoded_in_graph"] = int(np.sum(split.in_graph)) if getattr(split, "in_graph", None) is not None else 0
        augmenter = build_augmenter(default_config().source.augment, "source")
        rates = []
        for _ in range(2):
            ds = build_dataset(split, 224, 32, 2, training=True, augmenter=augmenter, cache=False, epochs=1)
            start, seen = time.perf_counter(), 0
            for x, _y in ds:
                seen += int(x.shape[0])
            rates.append(seen / (time.perf_counter() - start))
        out["pipeline_img_s"] = max(rates)
        out["pipeline_img_s_per_core"] = out["pipeline_img_s"] / out["cores"]

        cfg = default_config(224)
        model_cfg = dataclasses.replace(cfg.model, backbone_args={}, bn="train")
        keras.utils.set_random_seed(0)
        model = TransferModel(build_classifier(model_cfg, 2))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        x = tf.random.uniform([32 * 4, 224, 224, 3], 0, 255)
        y = tf.one_hot(np.arange(32 * 4) % 2, 2)
        tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).repeat()
        step_s = timed_fit(model, tensors, steps=4, repeats=2 if quick else 3)
        out["step_img_s"] = 32 / step_s
        out["ratio"] = out["pipeline_img_s"] / out["step_img_s"]

        listing = os.path.join(tmp, "paths.json")
        k = 100 if quick else 250
        in_graph = split.in_graph.tolist() if getattr(split, "in_graph", None) is not None else [False] * len(split)
        with open(listing, "w") as f:
            json.dump({"paths": split.paths[:k], "in_graph": in_graph[:k]}, f)
        out["rss"], out["rss_streamed"] = {}, {}
        for key, mode in (("rss", "memory"), ("rss_streamed", "stream")):
            for times in (1, 4, 16):
                proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "rss_child.py"), listing, str(times), mode], check=True,
                                      capture_output=True, text=True,
                                      cwd=os.path.join(os.path.dirname(__file__), "..", ".."))
                out[key][f"{times}x"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(jpeg_pipeline(parser.parse_args().quick)), flush=True)
