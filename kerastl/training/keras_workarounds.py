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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                # (1) Shapes only: this worker's first replica's batch, no cross-worker reduce.
                batch = next(it)
                data_batch = tf.nest.map_structure(
                    lambda x: strategy.experimental_local_results(x)[0]
                    if isinstance(x, tf.distribute.DistributedValues) else x,
                    batch,
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _PATCHED = True
