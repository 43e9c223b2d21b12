"""One row of the performance table, measured in this process; prints one JSON object.

`benchmarks/run_all.py` runs each row in a fresh process (TensorFlow's thread settings are
fixed per process) and builds the table; run a row alone to look at it:

    python benchmarks/perf_rows.py step_overhead [--quick]
    python benchmarks/perf_rows.py adaptation_cost [--quick]
    python benchmarks/perf_rows.py tflite_224 [--quick]
    python benchmarks/perf_rows.py hardware [--quick]

Times are medians over repeats measured side by side in the same process, after a warm-up
(tracing and graph optimisation excluded): this machine is shared and noisy, so the rows
compare ratios, never one absolute time against another run's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _threads(intra: int | None):
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)


def _timed_fit(model, data, *, steps: int, repeats: int, **fit_kwargs) -> float:
    """Median seconds per step over `repeats` epochs of `steps` steps, after a warm-up epoch
    (tracing, caches), in ONE `fit` as training runs: one iterator, so tf.data's autotuned
    parallelism is as warm as in a real run."""
    import keras

    times = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append((time.perf_counter() - self.start) / steps)

    fit_kwargs.setdefault("shuffle", False)  # the datasets are already in order
    model.fit(data, steps_per_epoch=steps, epochs=repeats + 1, verbose=0, callbacks=[Clock()], **fit_kwargs)
    return statistics.median(times[1:])


def _default_config(size: int | None = None):
    import dataclasses

    from kerastl.config import load_config

    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "default.yaml"))
    model = cfg.model
    if size is not None:
        model = dataclasses.replace(model, input_size=size)
    return dataclasses.replace(cfg, model=model)


def _source_split(cfg, n: int):
    """The default job's source training images (rendered digits), the first n."""
    import numpy as np

    from kerastl.data.domain import load_domain

    domain = load_domain(cfg.source, cfg.seed, "source")
    return domain.splits["train"].subset(np.arange(n)), domain


def _bare_and_kerastl(cfg, batch: int, steps: int, repeats: int, jit: bool) -> dict:
    """ms/step: a plain compiled Keras step on tensors in memory, against kerastl's
    fine-tuning step (TransferModel) fed by kerastl's input pipeline (cache, shuffle,
    augmentation on the fly) for the same model and batch."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset, resize, to_rgb
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    size = cfg.model.input_size
    split, domain = _source_split(cfg, batch * steps)
    out = {}

    # Bare: the classifier compiled as Keras compiles it, fed the resized images as one
    # in-memory tensor (repeated), no augmentation.
    keras.utils.set_random_seed(0)
    bare = build_classifier(cfg.model, domain.num_classes).model
    bare.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x = resize(to_rgb(tf.convert_to_tensor(split.images)), size)
    y = tf.one_hot(split.labels, domain.num_classes)
    tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()
    out["bare_ms"] = 1000 * _timed_fit(bare, tensors, steps=steps, repeats=repeats)
    if jit:
        keras.utils.set_random_seed(0)
        xla = build_classifier(cfg.model, domain.num_classes).model
        xla.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", jit_compile=True)
        out["bare_xla_ms"] = 1000 * _timed_fit(xla, tensors, steps=steps, repeats=repeats)

    # kerastl: what the pretrain phase fits.
    keras.utils.set_random_seed(0)
    classifier = build_classifier(cfg.model, domain.num_classes)
    model = TransferModel(classifier)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    data = build_dataset(split, size, batch, domain.num_classes, training=True,
                         augmenter=build_augmenter(cfg.source.augment, "source"), epochs=(repeats + 1) * 2 + 2)
    out["kerastl_ms"] = 1000 * _timed_fit(model, data, steps=steps, repeats=repeats)
    # Where the difference comes from: kerastl's step on the in-memory tensors, and its
    # pipeline without augmentation.
    out["kerastl_step_on_tensors_ms"] = 1000 * _timed_fit(model, tensors, steps=steps, repeats=repeats)
    plain = build_dataset(split, size, batch, domain.num_classes, training=True, epochs=(repeats + 1) * 2 + 2)
    out["kerastl_no_augment_ms"] = 1000 * _timed_fit(model, plain, steps=steps, repeats=repeats)
    out["overhead"] = out["kerastl_ms"] / out["bare_ms"] - 1
    return out


def step_overhead(quick: bool) -> dict:
    """kerastl's training step against a bare compiled step, with TensorFlow's default
    threads and with one thread per op; and XLA."""
    import tensorflow as tf

    intra = int(os.environ.get("KERASTL_BENCH_INTRA", "0"))
    _threads(intra)
    if os.environ.get("KERASTL_BENCH_SIZE") == "224":
        cfg = _default_config(224)
        result = _bare_and_kerastl(cfg, batch=32, steps=4 if quick else 8, repeats=3, jit=not quick)
    else:
        cfg = _default_config()
        result = _bare_and_kerastl(cfg, batch=64, steps=40 if quick else 75, repeats=3 if quick else 5, jit=True)
    result.update(intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads() or "default",
                  input_size=cfg.model.input_size)
    return result


def adaptation_cost(quick: bool) -> dict:
    """DANN's training step against source_only's, same model, batch and pipeline (the
    digits configs), in ms/step."""
    import keras

    from kerastl.adaptation import build_method
    from kerastl.config import load_config
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import paired_dataset
    from kerastl.models.factory import build_classifier, set_trainable
    from kerastl.training.recipe import make_optimizer

    _threads(1)
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    steps, repeats = (15, 3) if quick else (30, 5)
    out = {}
    for method in ("source_only", "dann"):
        cfg = load_config(os.path.join(root, f"digits_{method}.yaml"))
        source = load_domain(cfg.source, cfg.seed, "source")
        target = load_domain(cfg.target, cfg.seed, "target")
        keras.utils.set_random_seed(0)
        classifier = build_classifier(cfg.model, target.num_classes)
        set_trainable(classifier.backbone, "all", "train")
        total = steps * (repeats + 1)
        model = build_method(method, classifier, make_optimizer("sgd", 0.01, 1e-3), weight=cfg.adapt.weight,
                             total_steps=total, bn_protocol=cfg.adapt.bn_protocol, **cfg.adapt.params)
        data = paired_dataset(source.splits["train"], target.splits["train"], cfg.model.input_size,
                              cfg.train.batch_size, target.num_classes, cfg.seed, steps, repeats + 1, 0,
                              (None, None))
        out[f"{method}_ms"] = 1000 * _timed_fit(model, data.repeat(), steps=steps, repeats=repeats)
    out["ratio"] = out["dann_ms"] / out["source_only_ms"]
    return out


def tflite_224(quick: bool) -> dict:
    """MobileNetV3Small at 224 px: TFLite float32 vs full-integer int8 (calibrated on 32
    images), LiteRT at batch 1 with 2 threads: latency, size, top-1 agreement with Keras.

    No ImageNet weights here, so the model is made confident the cheap way: a random
    backbone (weights=None) and a softmax head fitted on its pooled features of the check
    images (photo-like smooth random fields, a random class each). Agreement is only
    meaningful on confident outputs: a near-uniform softmax flips its argmax on rounding."""
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)

    def images(n):
        base = rng.uniform(0, 255, size=(n, 7, 7, 3)).astype("float32")
        return tf.image.resize(base, (224, 224), method="bicubic").numpy().clip(0, 255)

    check = images(64 if quick else 200)
    backbone = keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, include_top=False,
                                                   pooling="avg")
    raw = backbone.predict(check, batch_size=32, verbose=0)
    mean, variance = raw.mean(0), raw.var(0) + 1e-6
    head = keras.Sequential([keras.layers.Input(raw.shape[1:]), keras.layers.Dense(10, activation="softmax")])
    head.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    head.fit((raw - mean) / np.sqrt(variance), rng.integers(0, 10, len(check)), epochs=150, batch_size=64,
             verbose=0)
    inputs = keras.Input((224, 224, 3))
    normalized = keras.layers.Normalization(mean=mean, variance=variance)(backbone(inputs))
    model = keras.Model(inputs, head(normalized))
    keras_top1 = model.predict(check, batch_size=32, verbose=0).argmax(1)

    def convert(int8: bool) -> bytes:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if int8:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            calib = check[:32]
            conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return conv.convert()

    from ai_edge_litert.interpreter import Interpreter

    out = {}
    tops = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, int8 in (("float32", False), ("int8", True)):
            data = convert(int8)
            path = os.path.join(tmp, f"{name}.tflite")
            with open(path, "wb") as f:
                f.write(data)
            interp = Interpreter(model_path=path, num_threads=2)
            interp.allocate_tensors()
            inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
            preds, times = [], []
            for i, image in enumerate(check):
                interp.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
                start = time.perf_counter()
                interp.invoke()
                times.append(time.perf_counter() - start)
                preds.append(int(interp.get_tensor(outp["index"]).argmax()))
            out[f"{name}_ms"] = 1000 * statistics.median(times[5:])
            out[f"{name}_bytes"] = len(data)
            tops[name] = np.array(preds)
    out["latency_ratio"] = out["int8_ms"] / out["float32_ms"]
    out["size_ratio"] = out["int8_bytes"] / out["float32_bytes"]
    out["agreement_int8"] = float(np.mean(tops["int8"] == keras_top1))
    out["agreement_float32"] = float(np.mean(tops["float32"] == keras_top1))
    out["check_images"] = int(len(check))
    return out


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
    step = _timed_fit(model, data, steps=2 if quick else 4, repeats=2 if quick else 3)

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


def scaling(quick: bool) -> dict:
    """kerastl's training (TransferModel, the default job's pipeline with its augmentation)
    as the number of images grows (1x, 4x, 16x, seconds per epoch) and as the input size
    grows (96, 160, 224 px, ms per step at batch 32), one thread per op."""
    import dataclasses

    import keras
    import numpy as np

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset
    from kerastl.data.splits import Split
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    _threads(1)
    cfg = _default_config()
    base, domain = _source_split(cfg, 600 if quick else 1200)
    augmenter = build_augmenter(cfg.source.augment, "source")

    def model_for(model_cfg):
        keras.utils.set_random_seed(0)
        model = TransferModel(build_classifier(model_cfg, domain.num_classes))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        return model

    out = {"images": {}, "input_size": {}}
    batch = 64
    for factor in (1, 4, 16):
        split = Split(labels=np.tile(base.labels, factor), images=np.tile(base.images, (factor, 1, 1, 1)))
        steps = len(split) // batch
        data = build_dataset(split, cfg.model.input_size, batch, domain.num_classes, training=True,
                             augmenter=augmenter, epochs=3)
        per_step = _timed_fit(model_for(cfg.model), data, steps=steps, repeats=2)
        out["images"][f"{factor}x"] = {"images": len(split), "epoch_s": per_step * steps, "step_ms": 1000 * per_step}
    for size in (96, 160, 224):
        model_cfg = dataclasses.replace(cfg.model, input_size=size)
        split = base.subset(np.arange(32 * 4))
        data = build_dataset(split, size, 32, domain.num_classes, training=True, augmenter=augmenter, epochs=4)
        per_step = _timed_fit(model_for(model_cfg), data, steps=4, repeats=2 if quick else 3)
        out["input_size"][str(size)] = {"step_ms": 1000 * per_step, "pixels_vs_96": (size / 96) ** 2}
    return out


ROWS = {"step_overhead": step_overhead, "adaptation_cost": adaptation_cost, "tflite_224": tflite_224,
        "hardware": hardware, "scaling": scaling}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=sorted(ROWS))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = ROWS[args.row](args.quick)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
