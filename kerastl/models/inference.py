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


def outputs(dataset, features_model, head=None):
    """(features, class probabilities or None, labels) over every batch of an evaluation
    dataset of (image, one-hot label) batches: `features_model`'s outputs and, with
    `head`, the head's on them, as float32 arrays in the dataset's order."""
    import numpy as np

    feats, probs, labels = [], [], []
    for x, y in dataset:
        f = infer(features_model, x)
        feats.append(np.asarray(f, np.float32))
        if head is not None:
            probs.append(np.asarray(infer(head, f), np.float32))
        labels.append(np.argmax(np.asarray(y), axis=1))
    return np.concatenate(feats), (np.concatenate(probs) if head is not None else None), np.concatenate(labels)
