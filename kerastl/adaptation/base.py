"""The base model of unsupervised domain adaptation.

A batch pairs labelled source images with unlabelled target images, half and half. The
loss is

    source classification loss + weight * adaptation loss

where each method (one module each, registered in `METHODS`) defines the adaptation loss
and any sub-model it needs (a domain discriminator, a critic, a second head). Target
labels, when the data has them, only feed the `target_accuracy` metric; they never reach
a loss (except in `target_oracle`, the upper bound).

After training the wrapped `classifier` is a plain classifier: it is what is saved.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerastl.adaptation.catalog import CATALOG
from kerastl.registry import Registry
from kerastl.training.distribute import replicas

METHODS: Registry = Registry("adaptation method")


def register(name: str):
    """Registers a method class under its catalog name (its parameters are declared there)."""
    CATALOG.get(name)  # a method must be declared in the catalog first

    def add(cls):
        cls.method_name = name
        METHODS.register(name, cls)
        return cls

    return add


def split_classifier(classifier: keras.Model):
    """(features model, head model) of a kerastl classifier, sharing its layers.

    Features are the pooled backbone output; the head is everything after it.
    """
    pool = classifier.get_layer("pool")
    features = keras.Model(classifier.input, pool.output, name="features")
    names = [layer.name for layer in classifier.layers]
    after = classifier.layers[names.index("pool") + 1 :]
    head_in = keras.Input(pool.output.shape[1:], name="features_in")
    x = head_in
    for layer in after:
        x = layer(x)
    head = keras.Model(head_in, x, name="head")
    return features, head


def global_sum(x):
    """Sum of `x` over every replica (x itself on one device); for normalisers that must be
    those of the global batch. Not differentiated: use it on constants of the step."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(x))


def weighted_mean(values, weights):
    """This replica's estimate of the global-batch weighted mean of `values`: weights are
    normalised by their sum over every replica, so the replicas' estimates average to the
    one-device value."""
    return replicas() * tf.reduce_sum(weights * values) / global_sum(tf.reduce_sum(weights))


class AdaptationModel(keras.Model):
    """Source classification + weight x adaptation loss; subclasses define the latter.

    Args:
        classifier: the functional model from `build_classifier`.
        weight: weight of the adaptation loss.
        total_steps: training steps in all, for schedules driven by progress p in [0, 1].
        **hparams: the method's hyper-parameters (declared in catalog.py with their
            defaults and ranges; `kerastl methods` lists them).
    """

    method_name = "base"

    def __init__(self, classifier, weight: float = 1.0, total_steps: int = 1000, **hparams):
        super().__init__()
        from kerastl.config import check_method_params

        self.hp = check_method_params(self.method_name, hparams)
        self.classifier = classifier
        self.features, self.head = split_classifier(classifier)
        self.feature_dim = int(self.features.output.shape[-1])
        self.num_classes = int(classifier.output.shape[-1])
        self.weight = float(weight)
        self.total_steps = max(int(total_steps), 1)
        self.progress = self.add_weight(name="progress", shape=(), initializer="zeros", trainable=False)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "cls_loss", "adapt_loss", "target_top_class_share")
        }
        self.source_acc = keras.metrics.CategoricalAccuracy(name="source_accuracy")
        self.target_acc = keras.metrics.CategoricalAccuracy(name="target_accuracy")
        self.build_extra()

    def build(self, input_shape=None):
        # Every sub-model is a functional model, built at construction.
        self.built = True

    # --- what methods override -------------------------------------------------------

    def build_extra(self):
        """Creates and builds the method's own sub-models (discriminator, critic, ...)."""

    def adaptation_loss(self, fs, ft, ps, pt, training: bool = True):
        """Returns (loss, extra metrics dict) for source/target features and probabilities."""
        return tf.constant(0.0), {}

    def extra_variables(self):
        """Variables trained by the method besides the classifier's."""
        return []

    def optimizers(self):
        """Every optimizer the step uses (their state is checkpointed with the model)."""
        return [self.optimizer]

    # --- the Keras step contract -------------------------------------------------------

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.source_acc, self.target_acc, *self.extra_metrics()]

    def extra_metrics(self):
        return []

    def classification_loss(self, y, p):
        return tf.reduce_mean(keras.losses.categorical_crossentropy(y, p))

    def forward(self, xs, xt, training=True):
        # One pass over the concatenated batch: BatchNormalization sees both domains.
        x = tf.concat([xs, xt], axis=0)
        f = self.features(x, training=training)
        p = self.head(f, training=training)
        n = tf.shape(xs)[0]
        return f[:n], f[n:], p[:n], p[n:]

    def compute_losses(self, xs, ys, xt, yt):
        """(fs, ft, ps, pt, classification loss, adaptation loss, extra logs)."""
        fs, ft, ps, pt = self.forward(xs, xt)
        cls = self.classification_loss(ys, ps)
        adapt, logs = self.adaptation_loss(fs, ft, ps, pt)
        return fs, ft, ps, pt, cls, adapt, logs

    def minimize(self, loss_fn, variables, optimizer=None):
        """One update of `variables` by `optimizer` (default: the model's) on `loss_fn()`.

        `loss_fn` returns (loss, aux): the loss is this replica's estimate of the loss of
        the global batch (a mean over its examples, or a statistic of the all-gathered
        batch). Here, once for every method and every inner step: the division by the
        replica count (so the replicas' gradients sum to the one-device gradient), float16
        loss scaling inside the tape, and `apply`. Returns (loss, aux).
        """
        optimizer = optimizer or self.optimizer
        with tf.GradientTape() as tape:
            loss, aux = loss_fn()
            # float32 even when a mixed-precision method computes a term in float16
            scaled = optimizer.scale_loss(tf.cast(loss, tf.float32) / replicas())
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss, aux

    def train_step(self, data):
        (xs, ys), (xt, yt) = data

        def loss_fn():
            fs, ft, ps, pt, cls, adapt, logs = self.compute_losses(xs, ys, xt, yt)
            loss = tf.cast(cls, tf.float32) + self.weight * tf.cast(adapt, tf.float32)
            return loss, (cls, adapt, ps, pt, logs)

        variables = self.classifier.trainable_variables + self.extra_variables()
        loss, (cls, adapt, ps, pt, logs) = self.minimize(loss_fn, variables)
        return self.update_metrics(loss, cls, adapt, ys, ps, yt, pt, logs)

    def update_metrics(self, loss, cls, adapt, ys, ps, yt, pt, logs):
        self.trackers["loss"].update_state(loss)
        self.trackers["cls_loss"].update_state(cls)
        self.trackers["adapt_loss"].update_state(adapt)
        self.source_acc.update_state(ys, ps)
        # Target labels (all zeros when the data has none) only measure, never train.
        has_labels = tf.reduce_sum(yt, axis=-1) > 0
        self.target_acc.update_state(yt, pt, sample_weight=tf.cast(has_labels, tf.float32))
        # Share of target predictions in the most predicted class: near 1 = collapse.
        predicted = tf.one_hot(tf.argmax(pt, axis=1), self.num_classes)
        self.trackers["target_top_class_share"].update_state(tf.reduce_max(tf.reduce_mean(predicted, axis=0)))
        out = {m.name: m.result() for m in self.metrics}
        out.update(logs)
        out["progress"] = self.progress
        return out

    def test_step(self, data):
        x, y = data[0], data[1]
        p = self.classifier(x, training=False)
        self.trackers["cls_loss"].update_state(keras.losses.categorical_crossentropy(y, p))
        self.source_acc.update_state(y, p)
        return {"cls_loss": self.trackers["cls_loss"].result(), "accuracy": self.source_acc.result()}


def build_method(name: str, classifier: keras.Model, optimizer, *, weight: float = 1.0,
                 total_steps: int = 1000, jit_compile=False, **hparams) -> AdaptationModel:
    """The method `name` around `classifier`, built, compiled with `optimizer` and with the
    optimizer built for every variable it trains: ready for `fit` (and for saving).

    Keras would otherwise build the model by calling it on a whole paired batch, and the
    optimizer would refuse variables it was not built with (sub-models used only in
    `train_step`, like a discriminator, among them).
    """
    from kerastl.adaptation import METHODS  # registers every method

    model = METHODS.get(name)(classifier, weight=weight, total_steps=total_steps, **hparams)
    size = classifier.input_shape[1:]
    model(np.zeros((1, *size), np.float32))
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    model.optimizer.build(classifier.trainable_variables + model.extra_variables())
    return model


class ProgressCallback(keras.callbacks.Callback):
    """Sets `model.progress` = step / total_steps before every batch (drives schedules)."""

    def __init__(self, initial_step: int = 0):
        super().__init__()
        self.step = initial_step

    def on_train_batch_begin(self, batch, logs=None):
        self.model.progress.assign(min(self.step / self.model.total_steps, 1.0))
        self.step += 1
