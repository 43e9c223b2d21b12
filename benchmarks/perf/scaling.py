"""kerastl's training (TransferModel, the default job's pipeline with its augmentation)
as the number of images grows (1x, 4x, 16x, seconds per epoch) and as the input size
grows (96, 160, 224 px, ms per step at batch 32), one thread per op.

    python benchmarks/perf/scaling.py [--quick]
"""

from __future__ import annotations

import json

from common import default_config, source_split, threads, timed_fit


def scaling(quick: bool) -> dict:
    """kerastl's training (TransferModel, the default job's pipeline with its augmentation)
    as the number of images grows (1x, 4x, 16x, seconds per epoch) and as the input size
    grows (96, 160, 224 px, ms per step at batch 32), one thread per op."""
    import dataclasses

    import keras
    import numpy as np

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset
    from kerastl.data.splits import Split
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    threads(1)
    cfg = default_config()
    base, domain = source_split(cfg, 600 if quick else 1200)
    augmenter = build_augmenter(cfg.source.augment, "source")

    def model_for(model_cfg):
        keras.utils.set_random_seed(0)
        model = TransferModel(build_classifier(model_cfg, domain.num_classes))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        return model

    out = {"images": {}, "input_size": {}}
    batch = 64
    for factor in (1, 4, 16):
        split = Split(labels=np.tile(base.labels, factor), images=np.tile(base.images, (factor, 1, 1, 1)))
        steps = len(split) // batch
        data = build_dataset(split, cfg.model.input_size, batch, domain.num_classes, training=True,
                             augmenter=augmenter, epochs=3)
        per_step = timed_fit(model_for(cfg.model), data, steps=steps, repeats=2)
        out["images"][f"{factor}x"] = {"images": len(split), "epoch_s": per_step * steps, "step_ms": 1000 * per_step}
    for size in (96, 160, 224):
        model_cfg = dataclasses.replace(cfg.model, input_size=size)
        split = base.subset(np.arange(32 * 4))
        data = build_dataset(split, size, 32, domain.num_classes, training=True, augmenter=augmenter, epochs=4)
        per_step = timed_fit(model_for(model_cfg), data, steps=4, repeats=2 if quick else 3)
        out["input_size"][str(size)] = {"step_ms": 1000 * per_step, "pixels_vs_96": (size / 96) ** 2}
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(scaling(parser.parse_args().quick)), flush=True)
