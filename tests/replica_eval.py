"""Helper run in a subprocess by test_distribute.py (logical devices need a fresh TensorFlow).

    python tests/replica_eval.py REPLICAS_FOR_BATCHING

Fits a tiny classifier for one step under MirroredStrategy over two logical CPUs with a
validation set of 33 images at batch 32, the validation dataset batched for
REPLICAS_FOR_BATCHING replicas (2: kerastl's choice under this strategy; 1: as before),
and prints the validation accuracy against the one-device model's on the same images.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from conftest import tiny_classifier  # noqa: E402
from kerastl.data.pipeline import build_dataset  # noqa: E402
from kerastl.data.splits import Split  # noqa: E402
from kerastl.training.transfer_model import TransferModel  # noqa: E402

rng = np.random.default_rng(0)
train = Split(labels=rng.integers(0, 3, 32), images=rng.integers(0, 255, (32, 32, 32, 3), dtype=np.uint8))
val = Split(labels=rng.integers(0, 3, 33), images=rng.integers(0, 255, (33, 32, 32, 3), dtype=np.uint8))
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    keras.utils.set_random_seed(0)
    classifier = tiny_classifier()
    model = TransferModel(classifier)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    history = model.fit(build_dataset(train, 32, 32, 3, training=True), steps_per_epoch=1, epochs=1, verbose=0,
                        validation_data=build_dataset(val, 32, 32, 3, replicas=int(sys.argv[1])))
probs = np.asarray(classifier.model(val.images.astype("float32"), training=False))  # one device
print("ACCURACY", history.history["val_accuracy"][-1], float(np.mean(probs.argmax(-1) == val.labels)))
