"""Self-training after a method, measured on finished runs: a screen, not a kerastl option yet.

SHOT-style refinement (Liang et al., ICML 2020) of a saved classifier on the target's unlabelled
training images: the head (`predictions` and any hidden layers) is frozen, the features train
with information maximization (each prediction's entropy down, the entropy of the batch's mean
prediction up) plus `beta` x cross-entropy on pseudo-labels. The pseudo-labels come from class
centroids in feature space (cosine distance, features with a 1 appended), weighted by the
predicted probabilities, then once more from the hard labels, recomputed before every epoch.
No target label is used; the target test split is only evaluated after each epoch.

    python benchmarks/refine_after.py RUN_DIR [RUN_DIR ...] [--epochs 5] [--name refine_after_method]

Writes benchmarks/results/<name>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adabn_after import change_summary, write_results  # noqa: E402 (the sibling script measuring finished runs)


def arrays(split, size, num_classes):
    from kerastl.data.pipeline import build_dataset

    xs, ys = [], []
    for x, y in build_dataset(split, size, 256, num_classes, cache=False):
        xs.append(np.asarray(x))
        ys.append(np.argmax(np.asarray(y), -1))
    return np.concatenate(xs), np.concatenate(ys)


def pseudo_labels(features: np.ndarray, probs: np.ndarray) -> np.ndarray:
    f = np.concatenate([features, np.ones((len(features), 1))], 1)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    weights = probs
    for _ in range(2):  # soft centroids, then centroids of the hard labels they give
        centroids = (weights.T @ f) / (weights.sum(0)[:, None] + 1e-8)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-8
        labels = np.argmax(f @ centroids.T, 1)
        weights = np.eye(probs.shape[1])[labels]
    return labels.astype(np.int32)


def refine(run: Path, epochs: int, beta: float, lr: float, batch: int = 64) -> dict:
    import keras
    import tensorflow as tf

    from kerastl.config import load_config
    from kerastl.data.domain import load_domain
    from kerastl.models.factory import features_model

    cfg = load_config(str(run / "config.yaml"))
    target = load_domain(cfg.target, cfg.seed, "target")
    size, n = cfg.model.input_size, target.num_classes
    model = keras.models.load_model(run / "model.keras", compile=False)
    both = keras.Model(model.input, [features_model(model).output, model.output])  # one pass for both
    xu, yu = arrays(target.splits.get("pool", target.splits["train"]), size, n)
    xt, yt = arrays(target.splits["test"], size, n)

    def accuracy():
        return float((np.argmax(model.predict(xt, batch_size=256, verbose=0), -1) == yt).mean())

    start = accuracy()
    for layer in model.layers:
        if layer.name.startswith(("predictions", "hidden", "dropout")):
            layer.trainable = False
    variables = model.trainable_variables
    optimizer = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)

    @tf.function
    def step(x, labels):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            entropy = -tf.reduce_mean(tf.reduce_sum(p * tf.math.log(p + 1e-5), 1))
            mean = tf.reduce_mean(p, 0)
            diversity = tf.reduce_sum(mean * tf.math.log(mean + 1e-5))  # minus the mean's entropy
            ce = -tf.reduce_mean(tf.math.log(tf.gather(p, labels, batch_dims=1) + 1e-5))
            loss = entropy + diversity + beta * ce
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(cfg.seed)
    label_acc, test = [], []
    for _ in range(epochs):
        labels = pseudo_labels(*both.predict(xu, batch_size=256, verbose=0))
        label_acc.append(float((labels == yu).mean()))
        order = rng.permutation(len(xu))
        for b in range(0, len(order) - batch + 1, batch):
            j = order[b:b + batch]
            step(tf.constant(xu[j]), tf.constant(labels[j]))
        test.append(accuracy())
    metrics = json.loads((run / "metrics.json").read_text())
    return {"run": run.name, "method": metrics["adaptation"]["method"], "seed": cfg.seed, "as_saved": start,
            "pseudo_label_accuracy": label_acc, "test_per_epoch": test, "refined": test[-1]}


def table(rows: list[dict]) -> str:
    lines = ["| run | method | seed | target test as saved | pseudo-labels right (first epoch) | after refinement, per epoch | change |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['method']} | {r['seed']} | {r['as_saved']:.3f} | "
                     f"{r['pseudo_label_accuracy'][0]:.3f} | {', '.join(f'{a:.3f}' for a in r['test_per_epoch'])} | "
                     f"{r['refined'] - r['as_saved']:+.3f} |")
    return "\n".join(lines + change_summary(rows, "refined", "refinement")) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--beta", type=float, default=0.3, help="weight of the pseudo-label loss (SHOT's 0.3)")
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--name", default="refine_after_method")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    rows = []
    for run in args.runs:
        rows.append(refine(run, args.epochs, args.beta, args.lr))
        print(json.dumps(rows[-1]), flush=True)
    settings = {"epochs": args.epochs, "beta": args.beta, "lr": args.lr}
    write_results(args.name, "Self-training after each method (`benchmarks/refine_after.py`)",
                  {"settings": settings, "rows": rows}, table(rows), note=f"; settings {settings}")
    print(table(rows))


if __name__ == "__main__":
    main()
