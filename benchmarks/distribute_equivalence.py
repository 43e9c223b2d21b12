"""One device vs 2 replicas over a whole fine-tuning run: how far apart, and why.

One step on 2 replicas equals one step on one device (tests/test_distribute.py). Over many
steps the two trajectories part. This benchmark shows whether that is a bug or float
summation order. It fine-tunes MobileNetV3Small (weights from a small syndigits run made
here; two optimizers since backbone_lr_mult 0.1; cosine schedules; frozen BN) on digits with
10 labels per class, four ways, all with the same data, seed and initial weights:

  default   the default (one-device) strategy, kerastl's train_step
  mirrored  MirroredStrategy on 2 logical CPU devices, kerastl's train_step
  split     one device; gradients of the two half batches summed, as 2 replicas do
  perm      one device; the examples of every batch in reverse order (the same mean loss)

`split` and `perm` are mathematically the same step as `default`. If `mirrored` equals
`split` and `default` differs from `perm` about as much as from `mirrored`, the distributed
step is correct and what remains is rounding, amplified by training. It runs twice, with
oneDNN on (TensorFlow's default on x86) and off (TF_ENABLE_ONEDNN_OPTS=0), and writes
benchmarks/results/distribute_equivalence.{md,json}.

    python benchmarks/distribute_equivalence.py [--epochs 3] [--lr 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = [("default", "default"), ("mirrored", "mirrored"), ("split", "default"), ("perm", "default")]
PAIRS = [("default", "mirrored"), ("mirrored", "split"), ("default", "split"), ("default", "perm")]

SOURCE_YAML = """\
name: source
seed: 0
source: {dataset: syndigits, num_examples: 1500}
target: {dataset: digits, labels_per_class: 10}
model: {backbone: MobileNetV3Small, backbone_args: {alpha: 0.75, minimalistic: true},
        input_size: 32, dropout: 0.0, bn_momentum: 0.9}
train:
  batch_size: 32
  pretrain: {head_epochs: 0, epochs: 3, optimizer: adam, lr: 0.005}
  finetune: {head_epochs: 2, epochs: 4, optimizer: adam, lr: 0.002}
"""

FINETUNE_YAML = """\
name: finetune
seed: 0
target: {{dataset: digits, labels_per_class: 10}}
model: {{backbone: MobileNetV3Small, backbone_args: {{alpha: 0.75, minimalistic: true}},
        input_size: 32, dropout: 0.0, bn_momentum: 0.9, bn: frozen, weights: {weights}}}
train:
  batch_size: 20
  finetune: {{head_epochs: 0, epochs: {epochs}, optimizer: sgd, lr: {lr}}}
"""


def _split_step(self, data):
    """Sum of the gradients of the two half batches, each loss scaled by 1/2 (what 2 replicas do)."""
    import tensorflow as tf

    x, y = data[0], data[1]
    n = tf.shape(x)[0] // 2

    def grads(variables):
        total = None
        for part in (slice(None, n), slice(n, None)):
            with tf.GradientTape() as tape:
                loss = 0.5 * self.compute_loss(x=x[part], y=y[part], y_pred=self(x[part], training=True))
            g = tape.gradient(loss, variables)
            _log_loss(self, 2 * loss)
            total = g if total is None else [a + b for a, b in zip(total, g)]
        return total

    return _apply(self, x, y, grads)


def _perm_step(self, data):
    """The plain step on the batch in reverse order."""
    import tensorflow as tf

    x, y = data[0][::-1], data[1][::-1]

    def grads(variables):
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
        _log_loss(self, loss)
        return tape.gradient(loss, variables)

    return _apply(self, x, y, grads)


def _log_loss(model, loss):
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss)


def _apply(model, x, y, grads):
    head = [v for v in model.trainable_variables if id(v) not in model._backbone_ids]
    backbone = [v for v in model.trainable_variables if id(v) in model._backbone_ids]
    g = grads(head + backbone)
    model.optimizer.apply(g[: len(head)], head)
    model.backbone_optimizer.apply(g[len(head):], backbone)
    return model.compute_metrics(x, y, model(x, training=False), sample_weight=None)


def child(work: Path, epochs: int, lr: float) -> dict:
    """Runs in a fresh process (oneDNN is chosen when TensorFlow loads)."""
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    from kerastl.config import load_config
    from kerastl.training import job
    from kerastl.training.transfer_model import TransferModel

    source = work / "source"
    if not (source / "model.keras").exists():
        (work / "source.yaml").write_text(SOURCE_YAML)
        job.train(load_config(str(work / "source.yaml")), out=str(source), quiet=True, echo=print)
    (work / "finetune.yaml").write_text(FINETUNE_YAML.format(weights=source, epochs=epochs, lr=lr))

    steps = {"default": TransferModel.train_step, "mirrored": TransferModel.train_step,
             "split": _split_step, "perm": _perm_step}
    weights, rows = {}, {}
    fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        history = fit(self, *args, **kwargs)
        weights[current] = [v.numpy() for v in self.classifier.weights]
        return history

    keras.Model.fit = recording_fit
    for current, strategy in VARIANTS:
        TransferModel.train_step = steps[current]
        out = work / current
        cfg = load_config(str(work / "finetune.yaml"), [f"distribute.strategy={strategy}"])
        result = job.train(cfg, out=str(out), quiet=True, echo=lambda s: None)
        metrics = json.loads((out / "metrics.json").read_text())
        rows[current] = {
            "losses": [round(h["loss"], 5) for h in result.history],
            "target_test_accuracy": metrics["target_test"]["accuracy"],
        }
    keras.Model.fit = fit
    diffs = {f"{a} vs {b}": max(float(np.max(np.abs(p - q))) for p, q in zip(weights[a], weights[b]))
             for a, b in PAIRS}
    return {"variants": rows, "max_abs_weight_diff": diffs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(Path(args.child), args.epochs, args.lr)))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="kerastl-dist-") as tmp:
        for onednn in ("1", "0"):
            env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="3")
            work = Path(tmp) / f"onednn{onednn}"
            work.mkdir()
            if onednn == "0":  # the same source weights for both
                (work / "source").symlink_to(Path(tmp) / "onednn1" / "source")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(work), "--epochs", str(args.epochs), "--lr", str(args.lr)],
                env=env, capture_output=True, text=True, check=False)
            line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
            if proc.returncode or not line:
                sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
            results["on" if onednn == "1" else "off"] = json.loads(line[0][len("RESULT "):])
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    lines = [
        "# One device vs 2 replicas over a fine-tuning run",
        "",
        (f"MobileNetV3Small from a syndigits run, digits 10 labels/class, batch 20, SGD lr {args.lr}, "
         f"{args.epochs} epochs ({machine}). `python benchmarks/distribute_equivalence.py`; the variants "
         "are described in its docstring."),
        "",
        ("Reading: `mirrored vs split` = 0 says 2 replicas compute exactly the one-device half-batch step; "
         "`default vs split` and `default vs perm` are differences between mathematically equal "
         "one-device steps, i.e. rounding amplified by training."),
    ]
    for name, res in results.items():
        lines += ["", f"## oneDNN {name}", "", "| variant | epoch losses | target test acc |", "|---|---|---|"]
        for variant, row in res["variants"].items():
            lines.append(f"| {variant} | {', '.join(f'{x:.5f}' for x in row['losses'])} | "
                         f"{row['target_test_accuracy']:.4f} |")
        lines += ["", "| pair | max abs weight difference |", "|---|---|"]
        lines += [f"| {pair} | {d:.3g} |" for pair, d in res["max_abs_weight_diff"].items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distribute_equivalence.json").write_text(json.dumps(
        {"machine": machine, "epochs": args.epochs, "lr": args.lr, "results": results}, indent=2) + "\n")
    (RESULTS / "distribute_equivalence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
