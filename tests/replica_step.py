"""Helper run in a subprocess by test_distribute.py (logical devices need a fresh TensorFlow).

    python tests/replica_step.py OUT_DIR METHOD...

Splits the CPU into two logical devices, then for each METHOD trains it ("finetune" or an adaptation
method) for STEPS steps from the same initial weights on the same global batches, once on
the default strategy and once on MirroredStrategy over both devices, and saves both sets
of final weights (and the initial ones) in OUT_DIR/METHOD.npz, with the last step's logs.
Adaptation starts half-way through its schedule (progress 0.5 .. 0.83), so lambda and
every adversarial gradient into the features are non-zero.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from conftest import tiny_classifier  # noqa: E402
from kerastl.adaptation import CATALOG, build_method  # noqa: E402
from kerastl.training.distribute import sync_batchnorm  # noqa: E402
from kerastl.training.transfer_model import TransferModel  # noqa: E402

CLASSES, BATCH, STEPS = 3, 8, 3


def data():
    rng = np.random.default_rng(0)
    n = BATCH * STEPS
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    xt = rng.uniform(0, 160, (n, 32, 32, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, CLASSES, n), CLASSES)
    yt = keras.utils.to_categorical(rng.integers(0, CLASSES, n), CLASSES)
    return x, y, xt, yt


def build(method):
    classifier = tiny_classifier(CLASSES)
    if method == "finetune":
        model = TransferModel(classifier)
        model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                      backbone_optimizer=keras.optimizers.SGD(0.02, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    else:
        # No dropout in the discriminator: its masks are drawn per replica.
        params = {"dropout": 0.0} if "dropout" in CATALOG.get(method).params else {}
        model = build_method(method, classifier, keras.optimizers.SGD(0.01, momentum=0.9),
                             total_steps=2 * STEPS, **params)
    return model, classifier.model


def train(strategy, method, initial):
    x, y, xt, yt = data()
    with strategy.scope():
        model, classifier = build(method)
        if strategy.num_replicas_in_sync > 1:
            sync_batchnorm(classifier, True)
        model.set_weights(initial)
        if method != "finetune":
            model.steps_done.assign(STEPS)  # half-way: lambda near its maximum
        if method == "finetune":
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
        else:  # half source, half target, as the adapt stage pairs them
            half = BATCH // 2
            ds = tf.data.Dataset.zip((tf.data.Dataset.from_tensor_slices((x, y)).batch(half),
                                      tf.data.Dataset.from_tensor_slices((xt, yt)).batch(half)))
        history = model.fit(ds.take(STEPS), epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False)
    return [np.asarray(w) for w in model.get_weights()], {k: v[-1] for k, v in history.history.items()}


def main():
    out_dir, methods = Path(sys.argv[1]), sys.argv[2:]
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for method in methods:
        keras.utils.set_random_seed(0)
        model = build(method)[0]
        names = np.array([w.path for w in model.weights])
        # A confident, uneven classifier: CDAN+E's entropy weights then differ between
        # examples (and between replicas), as they do once a model has learned something.
        initial = [w * 8.0 if name.endswith("predictions/kernel") else w
                   for w, name in zip(model.get_weights(), names)]
        one, logs = train(tf.distribute.get_strategy(), method, initial)
        two, _ = train(mirrored, method, initial)
        np.savez(out_dir / f"{method}.npz", *(one + two + [np.asarray(w) for w in initial]),
                 n=len(one), names=names, lam=logs.get("lambda", np.nan))


if __name__ == "__main__":
    main()
