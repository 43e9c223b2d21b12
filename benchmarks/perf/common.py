"""What the performance rows share: thread settings, timing a `fit` in interleaved rounds,
the default config and its data, and a folder of camera-size JPEGs."""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def threads(intra: int | None):
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)

def timed_fit(model, data, *, steps: int, repeats: int, **fit_kwargs) -> float:
    """Median seconds per step over `repeats` epochs of `steps` steps, after a warm-up epoch
    (tracing, caches), in ONE `fit` as training runs: one iterator, so tf.data's autotuned
    parallelism is as warm as in a real run."""
    import keras

    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.start) / steps)

    fit_kwargs.setdefault("shuffle", False)  # the datasets are already in order
    model.fit(data, steps_per_epoch=steps, epochs=repeats + 1, verbose=0, callbacks=[Clock()], **fit_kwargs)
    return statistics.median(times[1:])

def default_config(size: int | None = None):
    import dataclasses

    from kerastl.config import load_config

    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "default.yaml"))
    model = cfg.model
    if size is not None:
        model = dataclasses.replace(model, input_size=size)
    return dataclasses.replace(cfg, model=model)

def source_split(cfg, n: int):
    """The default job's source training images (rendered digits), the first n."""
    import numpy as np

    from kerastl.data.domain import load_domain

    domain = load_domain(cfg.source, cfg.seed, "source")
    return domain.splits["train"].subset(np.arange(n)), domain

def one_round(model, data, steps: int) -> float:
    """Seconds per step of one `fit` of `steps` steps, timed from its third step (the first
    two refill tf.data's prefetch buffers of the new iterator; the step is already traced)."""
    import keras

    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                marks["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            marks["end"] = time.perf_counter()

    model.fit(data, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[Clock()], shuffle=False)
    return (marks["end"] - marks["start"]) / steps

def interleaved(contenders: dict, *, steps: int, rounds: int) -> dict:
    """ms/step of each (model, data) in `contenders`, measured in turn: round r times every
    contender once before round r+1 starts, so a slow spell of this shared machine (its step
    times fall in two modes, ~25 or ~42 ms at 32 px, whatever the model) hits all of them
    alike. Each contender is warmed up (traced) first. Returns the per-round times."""
    for model, data in contenders.values():
        model.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (model, data) in contenders.items():
            times[name].append(1000 * one_round(model, data, steps))
    return times

def photo_folder(root: str, n: int, seed: int = 0) -> list:
    """n camera-size JPEGs (640x480, quality 90) cut from the two photos scikit-learn ships
    (china.jpg, flower.jpg: 427x640): random crops, flips and brightness, two class folders."""
    import numpy as np
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    paths = []
    for i in range(n):
        k = i % 2
        im = photos[k]
        w, h = rng.integers(320, 640), rng.integers(240, 427)
        x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
        crop = im.crop((x, y, x + w, y + h)).resize((640, 480), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))
        folder = os.path.join(root, ("china", "flower")[k])
        os.makedirs(folder, exist_ok=True)
        paths.append(os.path.join(folder, f"{i:05d}.jpg"))
        crop.save(paths[-1], quality=90)
    return paths
