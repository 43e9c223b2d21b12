"""Keras' optimizers against kerastl's fused ones (`kerastl.optimizers`): the first
training step (tracing included) and the steps after it, CPU and wall time.

Each measurement is a fresh process (so the first step traces from nothing) that builds
the default config's classifier (MobileNetV3Small 0.75, 32 px, batch 64, one intra-op
thread, as `configs/default.yaml`) in a `TransferModel` and fits it on random tensors
already in memory. The two optimizers run in turn, in alternating order, for `--rounds`
rounds; the table gives medians and the median of the per-round ratios (this machine's
speed drifts between minutes, so only paired figures are compared).

    python benchmarks/fused_optimizers.py [--rounds 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CASES = {  # name: (optimizer, kwargs) as make_optimizer builds them
    "adam": ("Adam", {}),  # configs/default.yaml's pretraining and fine-tuning
    "sgd": ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),  # the digits adaptation configs'
}


def child(kind: str, case: str, steps: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.config import load_config
    from kerastl.models.factory import build_classifier
    from kerastl import optimizers as fused
    from kerastl.training.distribute import configure_threads
    from kerastl.training.schedules import WarmupCosine
    from kerastl.training.transfer_model import TransferModel

    cfg = load_config(None)
    configure_threads(cfg.train.intra_op_threads, cfg.train.inter_op_threads)
    keras.utils.set_random_seed(0)
    name, kwargs = CASES[case]
    optimizer = getattr(fused if kind == "fused" else keras.optimizers, name)(WarmupCosine(0.004, 10 * steps, 0),
                                                                              **kwargs)
    model = TransferModel(build_classifier(cfg.model, 10))
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    batch = cfg.train.batch_size
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * 8, 32, 32, 3)).astype("float32")
    y = np.eye(10, dtype="float32")[rng.integers(0, 10, batch * 8)]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()

    def timed(n):
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(data, steps_per_epoch=n, epochs=1, verbose=0)
        return time.perf_counter() - wall, time.process_time() - cpu

    first_wall, first_cpu = timed(1)
    rounds = [timed(steps) for _ in range(3)]
    return {"first_step_wall_s": first_wall, "first_step_cpu_s": first_cpu,
            "step_wall_ms": statistics.median(w for w, _ in rounds) * 1000 / steps,
            "step_cpu_ms": statistics.median(c for _, c in rounds) * 1000 / steps,
            "variables": len(model.trainable_variables)}


def table(results: dict) -> str:
    keys = [("first_step_cpu_s", "first step, CPU s"), ("first_step_wall_s", "first step, wall s"),
            ("step_cpu_ms", "later steps, CPU ms per step"), ("step_wall_ms", "later steps, wall ms per step")]
    lines = ["| optimizer | figure | Keras (median) | fused (median) | fused / Keras (median of rounds, range) |",
             "|---|---|---|---|---|"]
    for case, runs in results.items():
        for key, label in keys:
            keras_, fused_ = [r[key] for r in runs["keras"]], [r[key] for r in runs["fused"]]
            ratios = [f / k for f, k in zip(fused_, keras_)]
            lines.append(f"| {case} | {label} | {statistics.median(keras_):.2f} | {statistics.median(fused_):.2f} | "
                         f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="steps per timed fit (three fits, the median kept)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "CASE"), help=argparse.SUPPRESS)
    parser.add_argument("--name", default="fused_optimizers")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.steps)))
        return
    results = {case: {"keras": [], "fused": []} for case in CASES}
    for r in range(args.rounds):
        for case in CASES:
            for kind in (("keras", "fused") if r % 2 == 0 else ("fused", "keras")):
                proc = subprocess.run([sys.executable, __file__, "--child", kind, case, "--steps", str(args.steps)],
                                      capture_output=True, text=True, check=True)
                results[case][kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"round {r + 1} {case} {kind}: {results[case][kind][-1]}", flush=True)
    from common import machine, write_results

    text = table(results)
    note = (f"\n\nThe default config's classifier (MobileNetV3Small 0.75, 32 px, batch 64, one intra-op thread) fitted on "
            f"random tensors in memory, a fresh process per measurement, {args.rounds} rounds in alternating order; "
            f"later steps: the median of three fits of {args.steps} steps. `python benchmarks/fused_optimizers.py`.")
    write_results(args.name, ["# Keras' optimizers against the fused ones", "", f"Machine: {machine()}{note}", "", text],
                  {"results": results, "steps": args.steps})
    print(text)


if __name__ == "__main__":
    main()
