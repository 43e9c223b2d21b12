"""DANN's training step against source_only's, same model, batch and pipeline (the
digits configs), in ms/step.

    python benchmarks/perf/adaptation_cost.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics

from common import interleaved, threads


def adaptation_cost(quick: bool) -> dict:
    """DANN's training step against source_only's, same model, batch and pipeline (the
    digits configs), in ms/step."""
    import keras

    from kerastl.adaptation import build_method
    from kerastl.config import load_config
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import paired_dataset
    from kerastl.models.factory import build_classifier, set_trainable
    from kerastl.optimizers import make_optimizer

    threads(1)
    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    steps, rounds = (15, 3) if quick else (30, 7)
    contenders = {}
    for method in ("source_only", "dann"):
        cfg = load_config(os.path.join(root, f"digits_{method}.yaml"))
        source = load_domain(cfg.source, cfg.seed, "source")
        target = load_domain(cfg.target, cfg.seed, "target")
        keras.utils.set_random_seed(0)
        classifier = build_classifier(cfg.model, target.num_classes)
        set_trainable(classifier.backbone, "all", "train")
        total = (steps + 2) * (rounds + 2)
        model = build_method(method, classifier, make_optimizer("sgd", 0.01, 1e-3), weight=cfg.adapt.weight,
                             total_steps=total, bn_protocol=cfg.adapt.bn_protocol, **cfg.adapt.params)
        data = paired_dataset(source.splits["train"], target.splits["train"], cfg.model.input_size,
                              cfg.train.batch_size, target.num_classes, cfg.seed, steps + 2, rounds + 2, 0,
                              (None, None))
        contenders[method] = (model, data.repeat())
    times = interleaved(contenders, steps=steps, rounds=rounds)
    out = {f"{method}_ms": statistics.median(t) for method, t in times.items()}
    ratios = [d / s for d, s in zip(times["dann"], times["source_only"])]
    out.update(ratio=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)],
               rounds_ms={name: [round(v, 1) for v in t] for name, t in times.items()}, steps_per_round=steps)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(adaptation_cost(parser.parse_args().quick)), flush=True)
