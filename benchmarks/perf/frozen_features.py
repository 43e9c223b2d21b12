"""A head-only phase on a frozen MobileNetV3Small at 224 px (digits, no augmentation):
kerastl training the head on features computed once, against the frozen base run
inside `fit` every epoch (Keras' standard recipe: base.trainable = False in model.fit;
here kerastl itself with train.cache_features: false, so the two differ in nothing
else). Seconds per epoch (training + validation) after the first, and accuracy.

    python benchmarks/perf/frozen_features.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import time



def _calibrated_backbone(path: str) -> str:
    """MobileNetV3Small (224 px, no top) with random weights and its BatchNormalization
    statistics set from 64 digits images: ImageNet weights cannot be downloaded here, and
    with the initial statistics (mean 0, variance 1) its features collapse to ~1e-11 for
    every image (measured), leaving nothing for a head to learn. Calibrated, a logistic
    regression on its features reaches 0.45 on digits (measured): a usable frozen base."""
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = load_digits().images[:64, :, :, None].repeat(3, -1) * (255.0 / 16.0)
    images = tf.image.resize(images.astype(np.float32), (224, 224)).numpy()
    base = keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, include_top=False)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the statistics of this one batch
    base(images, training=True)
    base.save_weights(path)
    return path


def frozen_features(quick: bool) -> dict:
    """A head-only phase on a frozen MobileNetV3Small at 224 px (digits, no augmentation):
    kerastl training the head on features computed once, against the frozen base run
    inside `fit` every epoch (Keras' standard recipe: base.trainable = False in model.fit;
    here kerastl itself with train.cache_features: false, so the two differ in nothing
    else). Seconds per epoch (training + validation) after the first, and accuracy."""
    import tempfile

    import keras

    from kerastl.config import config_from_dict
    from kerastl.training import stage
    from kerastl.training.job import train

    epochs = 6 if quick else 10
    times: list = []
    original = stage.StageContext.callbacks

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    stage.StageContext.callbacks = lambda self, *a, **k: [Clock(), *original(self, *a, **k)]
    out = {"epochs": epochs}
    with tempfile.TemporaryDirectory() as tmp:
        weights = _calibrated_backbone(os.path.join(tmp, "backbone.weights.h5"))
        for cached in (True, False):
            times.clear()
            cfg = {"name": "frozen", "seed": 0,
                   "target": {"dataset": "digits", "labels_per_class": 30 if quick else 60},
                   "model": {"backbone": "MobileNetV3Small", "weights": weights, "input_size": 224, "dropout": 0.0},
                   "train": {"batch_size": 32, "eval_every_steps": 1, "report": False, "cache_features": cached,
                             "finetune": {"head_epochs": epochs, "epochs": 0, "lr": 0.01}}}
            lines = []
            start = time.perf_counter()
            result = train(config_from_dict(cfg), out=os.path.join(tmp, str(cached)), quiet=False, echo=lines.append)
            key = "cached" if cached else "frozen_base_in_fit"
            out[key] = {"epoch_s": list(times), "later_epoch_s": statistics.median(times[1:]),
                        "first_epoch_s": times[0], "job_s": time.perf_counter() - start,
                        "target_val_accuracy": result.metrics["target_val"]["accuracy"],
                        "target_test_accuracy": result.metrics["target_test"]["accuracy"],
                        "log": [line for line in lines if "computed once" in line]}
    out["speedup"] = out["frozen_base_in_fit"]["later_epoch_s"] / out["cached"]["later_epoch_s"]
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(frozen_features(parser.parse_args().quick)), flush=True)
