"""The base model of unsupervised domain adaptation.

A batch pairs labelled source images with unlabelled target images, half and half. The
loss is

    source classification loss + weight * adaptation loss

where each method (one module each, declared there with `catalog.declare`: the one
registry of methods) defines the adaptation loss and any sub-model it needs (a domain discriminator, a critic,
a second head). Target labels, when the data has them, only feed the `target_accuracy`
metric; they never reach a loss (except in `target_oracle`, the upper bound).

Semi-supervised adaptation adds a third part to each batch: a few labelled target images
(`target.labels_per_class`), which join the source images in the classification loss
while the unlabelled target images feed the adaptation loss as before.

After training the wrapped `classifier` is a plain classifier: it is what is saved.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import keras
import numpy as np
import tensorflow as tf

from kerastl.adaptation.catalog import CATALOG, spec_of
from kerastl.replicas import apply_scaled, loss_scaled, replicas


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
    # divide_no_nan: a batch whose weights are all 0 (PADA's exact weights, no image of the
    # target's classes in it) contributes nothing instead of NaN.
    return replicas() * tf.math.divide_no_nan(tf.reduce_sum(weights * values), global_sum(tf.reduce_sum(weights)))


def split_rows(joint, parts):
    """`joint` (rows of the concatenated `parts`) cut back into one tensor per part."""
    out, start = [], 0
    for i, part in enumerate(parts):
        n = tf.shape(part)[0]
        out.append(joint[start:] if i == len(parts) - 1 else joint[start:start + n])
        start = start + n
    return out


def every_labelled(ys, ps, yl=None, pl=None):
    """(labels, probabilities) of every labelled image of a step: the source's, and the
    labelled target images' (semi-supervised) when there are any."""
    if pl is None:
        return ys, ps
    return tf.concat([ys, tf.cast(yl, ys.dtype)], axis=0), tf.concat([ps, tf.cast(pl, ps.dtype)], axis=0)


# How target images meet BatchNormalization during training, the same for every method:
# `joint`: one pass over source + target (batch statistics of both, as DANN/TLlib do);
# `separate`: one pass per domain (each normalised by its own batch statistics);
# `source`: the target in inference mode (BN statistics of the source only).
BN_PROTOCOLS = ("joint", "separate", "source")


class Batch(NamedTuple):
    """One forward pass over a paired batch: what a method's losses are computed from."""

    xs: tf.Tensor  # source images
    ys: tf.Tensor  # source labels (one-hot)
    xt: tf.Tensor  # target images
    yt: tf.Tensor  # target labels (one-hot; all zeros when the data has none): metrics only
    fs: tf.Tensor  # source features (the pooled backbone output)
    ft: tf.Tensor  # target features
    ps: tf.Tensor  # source class probabilities
    pt: tf.Tensor  # target class probabilities
    yl: Optional[tf.Tensor] = None  # labels of the labelled target images (semi-supervised)
    pl: Optional[tf.Tensor] = None  # their class probabilities


class AdaptationModel(keras.Model):
    """Source classification + weight x adaptation loss; subclasses define the latter.

    A method overrides what it needs of:

    - `build_extra()`: create its sub-models (discriminator, critic, second head);
      `extra_variables()`: those trained with the classifier by the main optimizer;
    - `adaptation_loss(batch)` -> (loss, logs dict), from one forward-pass record;
    - rarely `forward` (which images BatchNormalization sees), `classification_loss`, or
      `update` (methods with several inner steps per batch, like MCD; each inner step goes
      through `minimize`).

    Losses are estimates of the global batch's loss (a mean over this replica's examples,
    or a statistic of the all-gathered batch): `minimize` divides by the replica count once,
    for every method. `steps_done` counts training steps (not optimizer updates); it is a
    variable of the model, so checkpoints keep it, and `progress` in [0, 1] follows it.

    Args:
        classifier: a `Classifier` handle from `models.factory`.
        weight: weight of the adaptation loss.
        total_steps: training steps in all, for schedules driven by `progress`.
        target_classes: the source classes (indices) the target holds, when the run knows
            it holds only some (partial transfer); partial methods use it.
        **hparams: the method's hyper-parameters (declared in catalog.py with their
            defaults and ranges; `kerastl methods` lists them).
    """

    recalibrates_bn = False  # AdaBN: BN statistics re-estimated on the target after training

    def __init__(self, classifier, weight: float = 1.0, total_steps: int = 1000, bn_protocol: str = "joint",
                 weight_ramp: bool = False, label_smoothing: float = 0.0, target_classes=None, **hparams):
        super().__init__()
        self.hp = spec_of(type(self)).validated(hparams)
        self.classifier = classifier.model
        self.features, self.head = classifier.features, classifier.head
        self.parts = classifier  # the handle (not a layer): which variables are the backbone's
        self.backbone_optimizer = None
        self.feature_dim = int(self.features.output.shape[-1])
        self.num_classes = int(self.classifier.output.shape[-1])
        if bn_protocol not in BN_PROTOCOLS:
            raise ValueError(f"bn_protocol: {bn_protocol!r} is not one of {', '.join(BN_PROTOCOLS)}")
        self.bn_protocol = bn_protocol
        self.weight = float(weight)
        self.weight_ramp = bool(weight_ramp)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: {label_smoothing} is not in [0, 1)")
        self.label_smoothing = float(label_smoothing)
        self.total_steps = max(int(total_steps), 1)
        # The source classes the target holds when the run knows it holds only some (a
        # partial transfer matched by class name); None: every class, or not known.
        self.target_classes = None if target_classes is None else [int(i) for i in target_classes]
        # Written inside the replicated step: every replica counts the same steps.
        self.steps_done = self.add_weight(name="steps_done", shape=(), dtype="int64", initializer="zeros",
                                          trainable=False, aggregation="only_first_replica")
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

    @property
    def progress(self):
        """Training progress p = steps done / total steps, in [0, 1] (float32).

        Divided in float64: in a traced step, TensorFlow's graph optimizer turns a float32
        division by a constant into a multiplication by its reciprocal, which is off by one
        ulp for some steps; float64 then rounds to the
        exact float32 quotient, so a schedule gives the same value however it is run.
        """
        p = tf.cast(self.steps_done, tf.float64) / float(self.total_steps)
        return tf.cast(tf.minimum(p, 1.0), tf.float32)

    @property
    def method_name(self) -> str:
        """The name the method is declared under (`adapt.method`)."""
        return spec_of(type(self)).name

    def adaptation_weight(self):
        """The adaptation loss's weight at this step: `weight`, or with `weight_ramp` the
        weight times DANN's schedule 2 / (1 + exp(-10 p)) - 1 (0 at the start, 0.99 x weight
        at p = 0.5)."""
        if not self.weight_ramp:
            return self.weight
        return grl_lambda(self.progress, 10.0, self.weight)

    # --- what methods override -------------------------------------------------------

    def build_extra(self):
        """Creates and builds the method's own sub-models (discriminator, critic, ...)."""

    def extra_variables(self):
        """Variables trained by the main optimizer besides the classifier's."""
        return []

    def adaptation_loss(self, batch: Batch):
        """(loss, logs dict) of the adaptation term for one forward pass."""
        return tf.constant(0.0), {}

    def forward(self, xs, ys, xt, yt, labelled=None) -> Batch:
        """Features and predictions of both domains (and of the labelled target images,
        `labelled` = (xl, yl), if any) under the run's BN protocol."""
        xl, yl = labelled if labelled is not None else (None, None)
        feats = self.domain_features(xs, xt, xl)
        if self.bn_protocol == "joint":
            # One pass over the concatenated batch: BatchNormalization sees both domains.
            probs = split_rows(self.head(tf.concat(feats, axis=0), training=True), feats)
        else:
            target_training = self.bn_protocol == "separate"
            probs = [self.head(feats[0], training=True), *(self.head(f, training=target_training) for f in feats[1:])]
        return Batch(xs, ys, xt, yt, feats[0], feats[1], probs[0], probs[1],
                     yl, probs[2] if xl is not None else None)

    def domain_features(self, xs, xt, xl=None):
        """[source, target(, labelled target)] features under the run's BN protocol, for
        methods that run the heads themselves (MCD); labelled target images are target
        images to BatchNormalization."""
        parts = [xs, xt] if xl is None else [xs, xt, xl]
        if self.bn_protocol == "joint":
            return split_rows(self.features(tf.concat(parts, axis=0), training=True), parts)
        target_training = self.bn_protocol == "separate"
        return [self.features(xs, training=True), *(self.features(x, training=target_training) for x in parts[1:])]

    def classification_loss(self, batch: Batch):
        """Cross-entropy over every labelled image: the source's and, semi-supervised, the
        labelled target images' (one mean: each image counts once)."""
        y, p = every_labelled(batch.ys, batch.ps, batch.yl, batch.pl)
        return self.cross_entropy(y, p)

    def cross_entropy(self, y, p):
        """Mean cross-entropy of labelled images' probabilities `p` against one-hot `y`, with
        the run's label smoothing: the loss every method trains its classifier with."""
        return tf.reduce_mean(keras.losses.categorical_crossentropy(y, p, label_smoothing=self.label_smoothing))

    def update(self, xs, ys, xt, yt, labelled=None):
        """One training step on a paired batch (and labelled target images, `labelled` =
        (xl, yl), when semi-supervised); returns the logs."""

        def loss_fn():
            batch = self.forward(xs, ys, xt, yt, labelled)
            cls = self.classification_loss(batch)
            adapt, logs = self.adaptation_loss(batch)
            loss = tf.cast(cls, tf.float32) + self.adaptation_weight() * tf.cast(adapt, tf.float32)
            return loss, (batch, cls, adapt, logs)

        variables = self.classifier.trainable_variables + self.extra_variables()
        loss, (batch, cls, adapt, logs) = self.minimize(loss_fn, variables)
        return self.record(batch, loss=loss, cls_loss=cls, adapt_loss=adapt, logs=logs)

    def optimizers(self):
        """Every optimizer the step uses (their state is checkpointed with the model)."""
        return [o for o in (self.optimizer, self.backbone_optimizer) if o is not None]

    # --- the Keras step contract -------------------------------------------------------

    def call(self, inputs, training=None):
        return self.classifier(inputs, training=training)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.source_acc, self.target_acc]

    def compile(self, optimizer, backbone_optimizer=None, **kwargs):
        """As `keras.Model.compile`, with an optional second optimizer for the backbone's
        variables (a lower learning rate for pretrained weights)."""
        super().compile(optimizer=optimizer, **kwargs)
        # compile() wraps only `optimizer` for mixed precision
        self.backbone_optimizer = loss_scaled(backbone_optimizer) if backbone_optimizer is not None else None

    def _groups(self, variables, optimizer):
        """[(optimizer, its variables)]: the backbone's to the backbone optimizer, if any."""
        if optimizer is not None or self.backbone_optimizer is None:
            return [(optimizer or self.optimizer, list(variables))]
        backbone = {id(v) for v in self.parts.backbone.trainable_variables}
        return [(self.optimizer, [v for v in variables if id(v) not in backbone]),
                (self.backbone_optimizer, [v for v in variables if id(v) in backbone])]

    def build_optimizers(self):
        """Builds every optimizer for the variables it trains (before `fit`: optimizers
        refuse variables they were not built with)."""
        for optimizer, variables in self._groups(self.classifier.trainable_variables + self.extra_variables(), None):
            optimizer.build(variables)

    def minimize(self, loss_fn, variables, optimizer=None):
        """One update of `variables` on `loss_fn()` by `optimizer` (default: the model's,
        and the backbone optimizer for the backbone's variables when there is one).

        `loss_fn` returns (loss, aux): the loss is this replica's estimate of the loss of
        the global batch (a mean over its examples, or a statistic of the all-gathered
        batch). Here, once for every method and every inner step: the division by the
        replica count (so the replicas' gradients sum to the one-device gradient), float16
        loss scaling inside the tape, and `apply`. Returns (loss, aux).
        """
        def per_replica():
            loss, aux = loss_fn()
            # float32 even when a mixed-precision method computes a term in float16
            return tf.cast(loss, tf.float32) / replicas(), (loss, aux)

        _, (loss, aux) = apply_scaled(per_replica, self._groups(variables, optimizer))
        return loss, aux

    def train_step(self, data):
        (xs, ys), (xt, yt), *labelled = data  # a third part: labelled target images
        logs = self.update(xs, ys, xt, yt, labelled[0] if labelled else None)
        self.steps_done.assign_add(1)  # after the logs read `progress`
        return logs

    def record(self, batch: Batch, *, loss, cls_loss, adapt_loss, logs=None) -> dict:
        """Updates the metrics from a step's losses and predictions; returns the logs."""
        self.trackers["loss"].update_state(loss)
        self.trackers["cls_loss"].update_state(cls_loss)
        self.trackers["adapt_loss"].update_state(adapt_loss)
        self.source_acc.update_state(batch.ys, batch.ps)
        # Target labels (all zeros when the data has none) only measure, never train.
        has_labels = tf.reduce_sum(batch.yt, axis=-1) > 0
        self.target_acc.update_state(batch.yt, batch.pt, sample_weight=tf.cast(has_labels, tf.float32))
        # Share of target predictions in the most predicted class: near 1 = collapse.
        predicted = tf.one_hot(tf.argmax(batch.pt, axis=1), self.num_classes)
        self.trackers["target_top_class_share"].update_state(tf.reduce_max(tf.reduce_mean(predicted, axis=0)))
        out = {m.name: m.result() for m in self.metrics}
        out.update(logs or {})
        out["progress"] = self.progress
        return out

    def test_step(self, data):
        x, y = data[0], data[1]
        p = self.classifier(x, training=False)
        self.trackers["cls_loss"].update_state(keras.losses.categorical_crossentropy(y, p))
        self.source_acc.update_state(y, p)
        return {"cls_loss": self.trackers["cls_loss"].result(), "accuracy": self.source_acc.result()}


def grl_lambda(progress, gamma: float = 10.0, max_lambda: float = 1.0):
    """lambda_p = max_lambda * (2 / (1 + exp(-gamma * p)) - 1), p in [0, 1]: DANN's progressive
    schedule, for the reversal coefficient of DANN, CDAN and MDD and for `weight_ramp`."""
    return max_lambda * (2.0 / (1.0 + tf.exp(-gamma * progress)) - 1.0)


def build_method(name: str, classifier, optimizer, *, backbone_optimizer=None, weight: float = 1.0,
                 total_steps: int = 1000, bn_protocol: str = "joint", weight_ramp: bool = False,
                 jit_compile=False, target_classes=None, **hparams) -> AdaptationModel:
    """The method `name` around `classifier` (a `Classifier` handle), built, compiled with
    `optimizer` (and `backbone_optimizer` for the backbone's variables, if given) and with
    the optimizers built for every variable they train: ready for `fit` (and for
    checkpointing).

    Keras would otherwise build the model by calling it on a whole paired batch, and the
    optimizer would refuse variables it was not built with (sub-models used only in
    `train_step`, like a discriminator, among them).
    """
    cls = CATALOG.get(name).load()
    model = cls(classifier, weight=weight, total_steps=total_steps, bn_protocol=bn_protocol,
                weight_ramp=weight_ramp, target_classes=target_classes, **hparams)
    model(np.zeros((1, classifier.input_size, classifier.input_size, 3), np.float32))
    model.compile(optimizer=optimizer, backbone_optimizer=backbone_optimizer, jit_compile=jit_compile)
    model.build_optimizers()
    return model
