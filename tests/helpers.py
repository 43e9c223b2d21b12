"""What every domain adaptation method must do, checked the same way for each.

`check_method_contract(method, tmp_path)` trains a method a few steps on a tiny classifier
and checks the contract of `AdaptationModel`:

- the logs hold finite loss, cls_loss, adapt_loss, source/target accuracy and progress;
- `steps_done` counts training steps (not optimizer updates) and drives `progress`;
- the classifier learns (its weights move);
- a checkpoint of the method (its variables, every optimizer's state, random states)
  restored continues exactly as the original did (a fresh copy restoring one is checked
  end to end by the adapt stage's resume test);
- the trained classifier saves and reloads in safe mode with the same predictions.

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


def build(method, seed=0, total_steps=6, **hparams):
    from kerastl.adaptation import build_method
    from kerastl.models.factory import set_trainable

    keras.utils.set_random_seed(seed)
    classifier = tiny_classifier(3)
    set_trainable(classifier.backbone, "all", "train")
    model = build_method(method, classifier, keras.optimizers.SGD(1e-2, momentum=0.9),
                         total_steps=total_steps, **hparams)
    return model, classifier


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

    # A checkpoint restored continues exactly as the original did: one more step, then
    # the checkpoint back into the same model and the same step again (a variable the
    # checkpoint misses, such as an optimizer left out of `optimizers()`, keeps its
    # advanced value and the second step differs).
    checkpoint = Checkpoint(tmp_path / method)
    checkpoint.commit(model, classifier.model, {"phase": "adapt", "epoch": 0})
    more = paired_batches(seed=2)
    model.fit(more, epochs=1, steps_per_epoch=1, verbose=0)
    once = [np.array(v) for v in training_variables(model)]
    state = checkpoint.load_state()
    checkpoint.restore_classifier(classifier.model, state)
    checkpoint.restore_training(model, state)
    assert int(model.steps_done) == steps
    model.fit(more, epochs=1, steps_per_epoch=1, verbose=0)
    for a, b in zip(once, training_variables(model)):
        np.testing.assert_allclose(a, np.array(b), rtol=1e-5, atol=1e-6, err_msg=f"{method}: {b.path}")

    path = tmp_path / f"{method}.keras"
    classifier.model.save(path)
    again = keras.saving.load_model(path, safe_mode=True, compile=False)
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(classifier.model(x)), atol=1e-6)
