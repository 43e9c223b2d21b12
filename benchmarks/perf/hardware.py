"""The CPU's float32 matmul peak against the training FLOP rate of EfficientNetB0 at
224 px (batch 16), both measured here; FLOPs of a step from TensorFlow's graph profiler.

    python benchmarks/perf/hardware.py [--quick]
"""

from __future__ import annotations

import json
import time

from common import timed_fit


def hardware(quick: bool) -> dict:
    """The CPU's float32 matmul peak against the training FLOP rate of EfficientNetB0 at
    224 px (batch 16), both measured here; FLOPs of a step from TensorFlow's graph profiler."""
    import keras
    import numpy as np
    import tensorflow as tf

    n = 2048
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul()
    times = []
    for _ in range(5 if quick else 10):
        start = time.perf_counter()
        matmul().numpy()
        times.append(time.perf_counter() - start)
    peak = 2 * n ** 3 / min(times)

    batch, size = 16, 224
    keras.utils.set_random_seed(0)
    model = keras.applications.EfficientNetB0(input_shape=(size, size, 3), weights=None, classes=10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(np.arange(batch) % 10, 10)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    step = timed_fit(model, data, steps=2 if quick else 4, repeats=2 if quick else 3)

    # Forward FLOPs from the graph profiler; a training step is ~3x (forward + two backward).
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    forward = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec((1, size, size, 3), tf.float32))
    opts = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    flops_per_image = profile(forward.graph, options=opts).total_float_ops
    train_flops = 3 * flops_per_image * batch / step
    return {"peak_gflops": peak / 1e9, "train_gflops": train_flops / 1e9, "fraction": train_flops / peak,
            "step_s": step, "forward_gflops_per_image": flops_per_image / 1e9}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(hardware(parser.parse_args().quick)), flush=True)
