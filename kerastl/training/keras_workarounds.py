"""Workarounds for bugs in Keras, each isolated here with the bug it works around.

`model.fit` under `tf.distribute.MultiWorkerMirroredStrategy` fails in Keras 3 (checked
with keras 3.15.1 and tensorflow 2.21; keras-team/keras#20585, tensorflow/tensorflow#72388):

1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first distributed batch across
   workers with `strategy.reduce("MEAN", batch, axis=None)` only to learn its shapes;
   under the multi-worker strategy that raises "Attempt to convert a value (PerReplica...)
   to a Tensor".
2. `reduce_per_replica` reduces the per-step logs with `strategy.reduce("MEAN", v,
   axis=0)` on the multi-worker strategy, and the logs are scalars: "Invalid reduction
   dimension 0 for input with 0 dimensions".

`_maybe_symbolic_build` runs at the start of `fit` and of every validation pass, and pulls
one batch from a throwaway iterator of the dataset even when there is nothing to build (it
only needs shapes). Under the multi-worker strategy that `next()` is itself a cross-worker
collective (the all-reduce of "does any worker still have data" that lets workers whose
data ran out feed an empty dummy batch), issued eagerly between the traced steps' own
collectives, and the throwaway iterator is dropped with its prefetching still running. The
replacement (`maybe_symbolic_build`) never touches the iterator when the model, its compiled
metrics and loss and its optimizer are built (kerastl builds the model before `fit`; the
rest is built by the first `fit`), so after that the only collectives are the steps'.

`patch_multi_worker_fit()` replaces exactly those two pieces (private Keras internals, so
it checks they are still there) and is applied only when kerastl trains with
`distribute.strategy: multi_worker`. Remove it when Keras fixes the bug.
"""

from __future__ import annotations

_PATCHED = False


def patch_multi_worker_fit():
    global _PATCHED
    if _PATCHED:
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not (hasattr(tf_trainer, "reduce_per_replica")
            and hasattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build")):
        raise RuntimeError(
            "kerastl's multi-worker workaround does not fit this Keras version "
            "(kerastl/training/keras_workarounds.py); check whether Keras fixed keras-team/keras#20585"
        )

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # (2) Scalars: reduce over replicas only (axis=None), never along a dimension 0.
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            def mean(v):
                if not isinstance(v, tf.distribute.DistributedValues) and not getattr(v, "device", ""):
                    return v  # a constant of the step (no device): the same on every worker
                if hasattr(v, "shape") and len(v.shape) == 0:
                    return strategy.reduce("MEAN", v, axis=None)
                return strategy.reduce("MEAN", v, axis=0)

            return tf.nest.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    _PATCHED = True


def nothing_to_build(model) -> bool:
    """True when Keras' `_symbolic_build` would do nothing: the model's layers, its compiled
    metrics and loss and its optimizer are all built."""
    return (all(layer.built for layer in model._flatten_layers())
            and (model._compile_metrics is None or model._compile_metrics.built)
            and (model._compile_loss is None or model._compile_loss.built)
            and (model.optimizer is None or model.optimizer.built))


def maybe_symbolic_build(model, iterator=None, data_batch=None):
    """Keras' `TensorFlowTrainer._maybe_symbolic_build` for the multi-worker strategy: (1)
    shapes from this worker's first replica's batch, no cross-worker reduce, and no batch
    pulled at all when there is nothing to build."""
    import tensorflow as tf

    strategy = model._distribute_strategy
    if strategy is None or nothing_to_build(model):
        return
    if iterator is not None:
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tf.nest.map_structure(
                lambda x: strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x,
                batch,
            )
            break
    with strategy.scope():
        model._symbolic_build(data_batch=data_batch)
