"""Seconds per epoch of the default source input pipeline with augmentation, cache warm.

6,000 syndigits at 32 px, batch 64, configs/default.yaml's `source.augment`, iterated
without a model (what the pipeline alone can deliver). The first epoch fills the cache and
is reported apart. Run it against two trees to compare them (PYTHONPATH picks the tree):

    PYTHONPATH=. python benchmarks/augment_pipeline.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import inspect
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    import kerastl
    from kerastl.config import load_config
    from kerastl.data.augment import build_augmenter
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset

    cfg = load_config(None)
    split = load_domain(cfg.source, 0, "source").splits["train"]
    if "seed" in inspect.signature(build_augmenter).parameters:  # kerastl before seeded augmentation
        augmenter = build_augmenter(cfg.source.augment, 0, "source")
    else:
        augmenter = build_augmenter(cfg.source.augment, "source")
    steps = len(split) // 64
    batches = iter(build_dataset(split, 32, 64, 10, training=True, seed=0, augmenter=augmenter, epochs=args.epochs))
    times = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        for _ in range(steps):
            next(batches)
        times.append(time.perf_counter() - start)
    warm = times[1:]
    print(f"{os.path.dirname(kerastl.__file__)}: {steps} batches per epoch; first epoch {times[0]:.3f} s; "
          f"warm epochs median {statistics.median(warm):.3f} s (min {min(warm):.3f}, max {max(warm):.3f})")


if __name__ == "__main__":
    main()
