"""A Keras model's outputs for batch after batch of images, from one traced graph.

Calling a Keras model eagerly, `model(x)`, runs it layer by layer in Python, several times
slower per batch than the same call traced once. The label-free
validators run the classifier over ~1,300 images after every adaptation epoch; the end of
every job evaluates three splits, and the domain distances, cached head features, report and
`kerastl evaluate` run it over more: all of them call `infer`.
"""

from __future__ import annotations

import weakref

_TRACED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def infer(model, x):
    """`model(x, training=False)` (BatchNormalization in inference mode) as a tf.function
    traced once per model for any batch size; returns a tensor."""
    fn = _TRACED.get(model)
    if fn is None:
        import tensorflow as tf

        spec = model.inputs[0]
        ref = weakref.ref(model)  # the cache must not keep the model alive
        fn = tf.function(lambda images: ref()(images, training=False),
                         input_signature=[tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)])
        _TRACED[model] = fn
    return fn(x)


def over_dataset(dataset, model, head=None, keep_images: bool = False) -> dict:
    """One pass over a dataset of (image, one-hot label) batches, in its order: the arrays
    `outputs` (`model`'s, float32), `head` (the head's on those outputs, when given),
    `labels` (integers) and `images` (uint8, with `keep_images`). Every loop that predicts
    over a split is this one."""
    import numpy as np

    parts = {"outputs": [], "head": [], "labels": [], "images": []}
    for batch in dataset:
        x, y = batch[0], batch[1]
        out = infer(model, x)
        parts["outputs"].append(np.asarray(out, np.float32))
        if head is not None:
            parts["head"].append(np.asarray(infer(head, out), np.float32))
        parts["labels"].append(np.argmax(np.asarray(y), axis=-1))
        if keep_images:
            parts["images"].append(np.clip(np.asarray(x), 0, 255).astype(np.uint8))
    if not parts["outputs"]:
        return {"outputs": np.zeros((0, 0), np.float32), "head": None, "labels": np.zeros((0,), np.int64),
                "images": None}
    return {name: np.concatenate(arrays) if arrays else None for name, arrays in parts.items()}


def predict_split(model, dataset):
    """(probabilities, integer labels) of a classifier over a dataset of (image, one-hot) batches."""
    result = over_dataset(dataset, model)
    return result["outputs"], result["labels"]


def outputs(dataset, features_model, head=None):
    """(features, class probabilities or None, labels) of `features_model` and, with `head`,
    of the head on those features."""
    result = over_dataset(dataset, features_model, head)
    return result["outputs"], result["head"], result["labels"]
