"""What every domain adaptation method must do, checked the same way for each.

`check_method_contract(method, tmp_path)` trains a method a few steps on a tiny classifier
and checks the contract of `AdaptationModel`:

- the logs hold finite loss, cls_loss, adapt_loss, source/target accuracy and progress;
- `steps_done` counts training steps (not optimizer updates) and drives `progress`;
- the classifier learns (its weights move);
- a method with an adaptation term logs it non-zero (positive; MME's, minus an entropy,
  negative) once training is under way, and that term reaches the features: one step from
  the same seed moves the feature extractor differently at `weight` 0 and 1;
- a checkpoint of the method (its variables, every optimizer's state, random states)
  restored into a freshly built copy continues exactly as the original did;
- the trained classifier saves and reloads in safe mode with the same predictions.

What each method's own term computes is checked against references in test_method_terms.py.

That N replicas take the step one device takes is checked for every method in
test_distribute.py (it needs a process with two logical CPUs).
"""

from __future__ import annotations

import numpy as np

import keras
import tensorflow as tf

from conftest import tiny_classifier

LOGS = {"loss", "cls_loss", "adapt_loss", "source_accuracy", "target_accuracy", "progress"}


def paired_batches(n=8, classes=3, seed=0, batch=4, labelled=None):
    """((xs, ys), (xt, yt)) batches, repeated: what the adapt stage feeds a method; with
    `labelled` (target labels, n // 2 of them), a third part (xl, yl) of labelled target
    images, as semi-supervised adaptation feeds it."""
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    xt = rng.uniform(0, 128, (n, 32, 32, 3)).astype("float32")
    ys = keras.utils.to_categorical(rng.integers(0, classes, n), classes)
    yt = keras.utils.to_categorical(rng.integers(0, classes, n), classes)
    if labelled is None:
        return tf.data.Dataset.from_tensor_slices(((xs, ys), (xt, yt))).batch(batch).repeat()
    xl = rng.uniform(0, 128, (n // 2, 32, 32, 3)).astype("float32")
    yl = keras.utils.to_categorical(labelled, classes)
    main = tf.data.Dataset.from_tensor_slices(((xs, ys), (xt, yt))).batch(batch)
    extra = tf.data.Dataset.from_tensor_slices((xl, yl)).batch(batch // 2)
    return tf.data.Dataset.zip(main, extra).map(lambda a, b: (*a, b)).repeat()


def build(method, seed=0, total_steps=6, optimizer=None, **hparams):
    from kerastl.adaptation import build_method
    from kerastl.models.factory import set_trainable

    keras.utils.set_random_seed(seed)
    classifier = tiny_classifier(3)
    set_trainable(classifier.backbone, "all", "train")
    model = build_method(method, classifier, optimizer or keras.optimizers.SGD(1e-2, momentum=0.9),
                         total_steps=total_steps, **hparams)
    return model, classifier


def has_adaptation_term(model) -> bool:
    """Whether the method trains on a term besides the classification loss."""
    from kerastl.adaptation.base import AdaptationModel

    cls = type(model)
    return cls.adaptation_loss is not AdaptationModel.adaptation_loss or cls.update is not AdaptationModel.update


def feature_update(method, weight, batch, seed=0):
    """The feature extractor's weights after one step at progress 0.5 with `adapt.weight`."""
    model, classifier = build(method, seed=seed, total_steps=4, weight=weight)
    model.steps_done.assign(2)
    (xs, ys), (xt, yt) = batch
    model.update(xs, ys, xt, yt)
    return [np.array(v) for v in classifier.features.trainable_variables]


def check_method_contract(method, tmp_path, steps=3):
    from kerastl.training.checkpoint import Checkpoint, training_variables

    model, classifier = build(method)
    before = [np.array(v) for v in classifier.model.trainable_variables]
    history = model.fit(paired_batches(), epochs=1, steps_per_epoch=steps, verbose=0).history
    assert LOGS <= set(history), (method, sorted(history))
    for key, values in history.items():
        assert np.all(np.isfinite(values)), (method, key, values)
    assert int(model.steps_done) == steps
    # The logs report the progress the last step ran at: (steps - 1) / total_steps.
    assert history["progress"][-1] == np.float32((steps - 1) / model.total_steps)
    assert any(not np.array_equal(b, np.array(v)) for b, v in zip(before, classifier.model.trainable_variables))
    if has_adaptation_term(model):
        term = float(np.mean(history["adapt_loss"]))
        # MME's term is minus an entropy; WDGRL's, a critic's distance estimate, can be
        # negative while the critic is young; the others are non-negative by construction.
        assert {"mme": term < 0.0, "wdgrl": term != 0.0}.get(method, term > 0.0), (method, history["adapt_loss"])
        batch = next(iter(paired_batches(seed=1)))
        off, on = feature_update(method, 0.0, batch), feature_update(method, 1.0, batch)
        # One step from one seed repeats bit for bit on CPU (a difference of 0.0), so any
        # difference is the term's; the smallest measured is MCC's, 4.9e-7.
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(off, on))
        assert moved > 1e-8, f"{method}: its adaptation term does not reach the features ({moved:.3g})"

    # A checkpoint restored into a freshly built copy (other initial weights) continues
    # exactly as the original did: a variable the checkpoint misses, such as an optimizer
    # left out of `optimizers()` or a sub-model's weights, keeps the copy's own value and
    # the step differs.
    checkpoint = Checkpoint(tmp_path / method)
    checkpoint.commit(model, classifier.model, {"phase": "adapt", "epoch": 0})
    more = paired_batches(seed=2)
    model.fit(more, epochs=1, steps_per_epoch=1, verbose=0)
    once = [np.array(v) for v in training_variables(model)]
    fresh, fresh_classifier = build(method, seed=7)
    state = checkpoint.load_state()
    checkpoint.restore_classifier(fresh_classifier.model, state)
    checkpoint.restore_training(fresh, state)
    assert int(fresh.steps_done) == steps
    fresh.fit(more, epochs=1, steps_per_epoch=1, verbose=0)
    variables = training_variables(fresh)
    assert len(variables) == len(once)
    for a, b in zip(once, variables):
        np.testing.assert_allclose(a, np.array(b), rtol=1e-5, atol=1e-6, err_msg=f"{method}: {b.path}")

    path = tmp_path / f"{method}.keras"
    classifier.model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(classifier.model(x)), atol=1e-6)
