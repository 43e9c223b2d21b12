"""One row of the performance table, measured in this process; prints one JSON object.

`benchmarks/run_all.py` runs each row in a fresh process (TensorFlow's thread settings are
fixed per process) and builds the table; run a row alone to look at it:

    python benchmarks/perf_rows.py step_overhead [--quick]
    python benchmarks/perf_rows.py adaptation_cost [--quick]
    python benchmarks/perf_rows.py tflite_224 [--quick]
    python benchmarks/perf_rows.py hardware [--quick]
    python benchmarks/perf_rows.py frozen_features [--quick]
    python benchmarks/perf_rows.py naive_fit [--quick]
    python benchmarks/perf_rows.py adapt_peer [--quick]
    python benchmarks/perf_rows.py jpeg_pipeline [--quick]

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


def _one_round(model, data, steps: int) -> float:
    """Seconds per step of one `fit` of `steps` steps, timed from its third step (the first
    two refill tf.data's prefetch buffers of the new iterator; the step is already traced)."""
    import keras

    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                marks["start"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            marks["end"] = time.perf_counter()

    model.fit(data, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[Clock()], shuffle=False)
    return (marks["end"] - marks["start"]) / steps


def _interleaved(contenders: dict, *, steps: int, rounds: int) -> dict:
    """ms/step of each (model, data) in `contenders`, measured in turn: round r times every
    contender once before round r+1 starts, so a slow spell of this shared machine (its step
    times fall in two modes, ~25 or ~42 ms at 32 px, whatever the model) hits all of them
    alike. Each contender is warmed up (traced) first. Returns the per-round times."""
    for model, data in contenders.values():
        model.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (model, data) in contenders.items():
            times[name].append(1000 * _one_round(model, data, steps))
    return times


def _bare_and_kerastl(cfg, batch: int, steps: int, rounds: int, jit: bool, diagnose: bool = True) -> dict:
    """ms/step: a plain compiled Keras step on tensors in memory, against kerastl's
    fine-tuning step (TransferModel) fed by kerastl's input pipeline (cache, shuffle,
    augmentation on the fly) for the same model and batch, measured in interleaved rounds.
    The overhead is the median over rounds of kerastl's time over the bare time of the
    same round."""
    import keras
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.data.pipeline import build_dataset, resize, to_rgb
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    size = cfg.model.input_size
    split, domain = _source_split(cfg, batch * (steps + 2))
    passes = rounds + 2  # each round's fit starts a new iterator over the finite pipeline

    # Bare: the classifier compiled as Keras compiles it, fed the resized images as one
    # in-memory tensor (repeated), no augmentation.
    x = resize(to_rgb(tf.convert_to_tensor(split.images)), size)
    y = tf.one_hot(split.labels, domain.num_classes)
    tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()

    def bare_model(**compile_kwargs):
        keras.utils.set_random_seed(0)
        bare = build_classifier(cfg.model, domain.num_classes).model
        bare.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", **compile_kwargs)
        return bare

    # kerastl: what the pretrain phase fits.
    keras.utils.set_random_seed(0)
    model = TransferModel(build_classifier(cfg.model, domain.num_classes))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    data = build_dataset(split, size, batch, domain.num_classes, training=True,
                         augmenter=build_augmenter(cfg.source.augment, "source"), epochs=passes)
    contenders = {"bare": (bare_model(), tensors), "kerastl": (model, data)}
    if jit:
        contenders["bare_xla"] = (bare_model(jit_compile=True), tensors)
    if diagnose:
        # Where a difference would come from: kerastl's step on the in-memory tensors, and
        # its pipeline without augmentation.
        contenders["kerastl_step_on_tensors"] = (model, tensors)
        contenders["kerastl_no_augment"] = (
            model, build_dataset(split, size, batch, domain.num_classes, training=True, epochs=passes))
    times = _interleaved(contenders, steps=steps, rounds=rounds)
    out = {f"{name}_ms": statistics.median(t) for name, t in times.items()}
    ratios = [k / b for k, b in zip(times["kerastl"], times["bare"])]
    out.update(overhead=statistics.median(ratios) - 1, overhead_range=[min(ratios) - 1, max(ratios) - 1],
               rounds_ms={name: [round(v, 1) for v in t] for name, t in times.items()}, steps_per_round=steps)
    return out


def step_overhead(quick: bool) -> dict:
    """kerastl's training step against a bare compiled step, with TensorFlow's default
    threads and with one thread per op; and XLA."""
    import tensorflow as tf

    intra = int(os.environ.get("KERASTL_BENCH_INTRA", "0"))
    _threads(intra)
    if os.environ.get("KERASTL_BENCH_SIZE") == "224":
        cfg = _default_config(224)
        result = _bare_and_kerastl(cfg, batch=32, steps=4 if quick else 8, rounds=3 if quick else 5, jit=not quick,
                                   diagnose=not quick)
    else:
        cfg = _default_config()
        # (row 2c reads XLA's time with one thread per op; --quick measures only that one)
        result = _bare_and_kerastl(cfg, batch=64, steps=30, rounds=5 if quick else 9,
                                   jit=intra == 1 or not quick, diagnose=not quick)
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
    from kerastl.optimizers import make_optimizer

    _threads(1)
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    steps, rounds = (15, 3) if quick else (30, 7)
    contenders = {}
    for method in ("source_only", "dann"):
        cfg = load_config(os.path.join(root, f"digits_{method}.yaml"))
        source = load_domain(cfg.source, cfg.seed, "source")
        target = load_domain(cfg.target, cfg.seed, "target")
        keras.utils.set_random_seed(0)
        classifier = build_classifier(cfg.model, target.num_classes)
        set_trainable(classifier.backbone, "all", "train")
        total = (steps + 2) * (rounds + 2)
        model = build_method(method, classifier, make_optimizer("sgd", 0.01, 1e-3), weight=cfg.adapt.weight,
                             total_steps=total, bn_protocol=cfg.adapt.bn_protocol, **cfg.adapt.params)
        data = paired_dataset(source.splits["train"], target.splits["train"], cfg.model.input_size,
                              cfg.train.batch_size, target.num_classes, cfg.seed, steps + 2, rounds + 2, 0,
                              (None, None))
        contenders[method] = (model, data.repeat())
    times = _interleaved(contenders, steps=steps, rounds=rounds)
    out = {f"{method}_ms": statistics.median(t) for method, t in times.items()}
    ratios = [d / s for d, s in zip(times["dann"], times["source_only"])]
    out.update(ratio=statistics.median(ratios), ratio_range=[min(ratios), max(ratios)],
               rounds_ms={name: [round(v, 1) for v in t] for name, t in times.items()}, steps_per_round=steps)
    return out


def tflite_224(quick: bool) -> dict:
    """MobileNetV3Small at 224 px, as Keras builds it and its `minimalistic` variant (no
    hard-swish, no squeeze-and-excitation; the digits configs' backbone): TFLite float32 vs
    full-integer int8, see `_tflite_pair`. LiteRT's XNNPACK delegate runs int8 hard-swish
    outside the delegate (see kerastl.export.convert.hard_swish_layers), so the two differ."""
    return {"standard": _tflite_pair(quick, minimalistic=False), "minimalistic": _tflite_pair(quick, minimalistic=True)}


def _tflite_pair(quick: bool, minimalistic: bool) -> dict:
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
                                                   pooling="avg", minimalistic=minimalistic)
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


def _calibrated_backbone(path: str) -> str:
    """MobileNetV3Small (224 px, no top) with random weights and its BatchNormalization
    statistics set from 64 digits images: ImageNet weights cannot be downloaded here, and
    with the initial statistics (mean 0, variance 1) its features collapse to ~1e-11 for
    every image (measured), leaving nothing for a head to learn. Calibrated, a logistic
    regression on its features reaches 0.45 on digits (measured): a usable frozen base."""
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    images = load_digits().images[:64, :, :, None].repeat(3, -1) * (255.0 / 16.0)
    images = tf.image.resize(images.astype(np.float32), (224, 224)).numpy()
    base = keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, include_top=False)
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the statistics of this one batch
    base(images, training=True)
    base.save_weights(path)
    return path


def frozen_features(quick: bool) -> dict:
    """A head-only phase on a frozen MobileNetV3Small at 224 px (digits, no augmentation):
    kerastl training the head on features computed once, against the frozen base run
    inside `fit` every epoch (Keras' standard recipe: base.trainable = False in model.fit;
    here kerastl itself with train.cache_features: false, so the two differ in nothing
    else). Seconds per epoch (training + validation) after the first, and accuracy."""
    import tempfile

    import keras

    from kerastl.config import config_from_dict
    from kerastl.training import stage
    from kerastl.training.job import train

    epochs = 6 if quick else 10
    times: list = []
    original = stage.StageContext.callbacks

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    stage.StageContext.callbacks = lambda self, *a, **k: [Clock(), *original(self, *a, **k)]
    out = {"epochs": epochs}
    with tempfile.TemporaryDirectory() as tmp:
        weights = _calibrated_backbone(os.path.join(tmp, "backbone.weights.h5"))
        for cached in (True, False):
            times.clear()
            cfg = {"name": "frozen", "seed": 0,
                   "target": {"dataset": "digits", "labels_per_class": 30 if quick else 60},
                   "model": {"backbone": "MobileNetV3Small", "weights": weights, "input_size": 224, "dropout": 0.0},
                   "train": {"batch_size": 32, "eval_every_steps": 1, "report": False, "cache_features": cached,
                             "finetune": {"head_epochs": epochs, "epochs": 0, "lr": 0.01}}}
            lines = []
            start = time.perf_counter()
            result = train(config_from_dict(cfg), out=os.path.join(tmp, str(cached)), quiet=False, echo=lines.append)
            key = "cached" if cached else "frozen_base_in_fit"
            out[key] = {"epoch_s": list(times), "later_epoch_s": statistics.median(times[1:]),
                        "first_epoch_s": times[0], "job_s": time.perf_counter() - start,
                        "target_val_accuracy": result.metrics["target_val"]["accuracy"],
                        "target_test_accuracy": result.metrics["target_test"]["accuracy"],
                        "log": [line for line in lines if "computed once" in line]}
    out["speedup"] = out["frozen_base_in_fit"]["later_epoch_s"] / out["cached"]["later_epoch_s"]
    return out


_NAIVE = """
import json, sys, time
t0 = time.perf_counter()
import keras, numpy as np
folder, test_npz, weights_run, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keras.utils.set_random_seed(0)
# The article's recipe in Keras: a pretrained network, a new last layer, Adam 1e-3 on every
# weight, the image folder read and decoded anew every epoch, batch 32, no cache, no prefetch.
trained = keras.saving.load_model(weights_run + "/model.keras", compile=False)
features = keras.Model(trained.input, trained.get_layer("pool").output)
model = keras.Sequential([features, keras.layers.Dense(10, activation="softmax")])
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
data = keras.utils.image_dataset_from_directory(folder, image_size=(32, 32), batch_size=32, shuffle=True,
                                               seed=0, verbose=False)
test = np.load(test_npz)
timeline, clock = [], [0.0]

class Timeline(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        clock[0] += time.perf_counter() - self.start  # the test below is not the recipe's
        accuracy = float(np.mean(model.predict(test["x"], verbose=0).argmax(-1) == test["y"]))
        timeline.append({"epoch": epoch + 1, "train_s": clock[0], "test_accuracy": accuracy})

start = time.perf_counter() - t0
model.fit(data, epochs=epochs, verbose=0, callbacks=[Timeline()])
print(json.dumps({"startup_s": start, "timeline": timeline}))
"""


def naive_fit(quick: bool) -> dict:
    """The article's fine-tuning recipe (../shared/seed: a pretrained network with a new last
    layer, Adam 1e-3 on everything, the image folder decoded every epoch, batch 32, no cache
    or prefetch) in Keras, against `kerastl train` fine-tuning the same source-trained model
    on the same 100 labelled target images (the default job's fine-tuning recipe). Both start
    from one model trained by kerastl on the rendered digits only (the default job's
    pretraining recipe). Whole processes; the naive run's test accuracy after every epoch
    (not counted in its time) gives its time to kerastl's accuracy, if it gets there."""
    import subprocess
    import tempfile

    import numpy as np
    from PIL import Image

    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset

    # (--quick: 4 source epochs instead of 15, a weaker start for both.)
    root = os.path.join(os.path.dirname(__file__), "..")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        source_run = os.path.join(tmp, "source")
        subprocess.run([sys.executable, "-m", "kerastl", "train", "configs/default.yaml", "--quiet", "--out", source_run,
                        "--set", "source=null", "--set", "target.dataset=syndigits",
                        "--set", "target.num_examples=6000", "--set", "target.labels_per_class=null",
                        "--set", f"train.finetune.epochs={4 if quick else 15}", "--set", "train.finetune.warmup_epochs=0.5",
                        "--set", "train.report=false"], check=True, cwd=root, capture_output=True)
        start = time.perf_counter()
        kerastl_run = os.path.join(tmp, "kerastl")
        subprocess.run([sys.executable, "-m", "kerastl", "train", "configs/default.yaml", "--quiet", "--out", kerastl_run,
                        "--set", "source=null", "--set", f"model.weights={source_run}", "--set", "train.report=false"],
                       check=True, cwd=root, capture_output=True)
        out["kerastl_s"] = time.perf_counter() - start
        with open(os.path.join(kerastl_run, "metrics.json")) as f:
            out["kerastl_accuracy"] = json.load(f)["target_test"]["accuracy"]

        cfg = _default_config()
        target = load_domain(cfg.target, cfg.seed, "target")
        folder = os.path.join(tmp, "folder")
        train = target.splits["train"]
        for i, (image, label) in enumerate(zip(train.images, train.labels)):
            os.makedirs(os.path.join(folder, f"class_{label}"), exist_ok=True)
            Image.fromarray(np.asarray(image).squeeze().astype(np.uint8)).convert("RGB").save(
                os.path.join(folder, f"class_{label}", f"{i}.png"))
        xs, ys = [], []
        for x, y in build_dataset(target.splits["test"], 32, 256, target.num_classes):
            xs.append(x.numpy()), ys.append(y.numpy().argmax(-1))
        np.savez(os.path.join(tmp, "test.npz"), x=np.concatenate(xs), y=np.concatenate(ys))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _NAIVE, folder, os.path.join(tmp, "test.npz"), source_run,
                               str(10 if quick else 40)], check=True, cwd=root, capture_output=True, text=True)
        naive = json.loads(proc.stdout.strip().splitlines()[-1])
        timeline = naive["timeline"]
        out["naive_process_s"] = time.perf_counter() - start
        out["naive_startup_s"] = naive["startup_s"]
        out["naive_timeline"] = timeline
        out["naive_best_accuracy"] = max(t["test_accuracy"] for t in timeline)
        reached = [t for t in timeline if t["test_accuracy"] >= out["kerastl_accuracy"]]
        out["naive_to_kerastl_accuracy_s"] = (naive["startup_s"] + reached[0]["train_s"]) if reached else None
    return out


_ADAPT_DANN = """
import json, os, sys, time
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras, tensorflow as tf
from adapt.feature_based import DANN
from adapt.utils import UpdateLambda
from kerastl.adaptation.dann import discriminator
from kerastl.config import load_config
from kerastl.data.domain import load_domain
from kerastl.data.pipeline import build_dataset
from kerastl.models.factory import build_classifier

steps = int(sys.argv[1])
cfg = load_config("configs/digits_dann.yaml")
tf.config.threading.set_intra_op_parallelism_threads(cfg.train.intra_op_threads)
keras.utils.set_random_seed(0)

def arrays(split, classes):
    xs, ys = [], []
    for x, y in build_dataset(split, cfg.model.input_size, 256, classes):
        xs.append(x.numpy()), ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)

source = load_domain(cfg.source, cfg.seed, "source")
target = load_domain(cfg.target, cfg.seed, "target")
xs, ys = arrays(source.splits["train"], source.num_classes)
xt, _ = arrays(target.splits["train"], target.num_classes)
x_test, y_test = arrays(target.splits["test"], target.num_classes)
# kerastl's networks for this config: backbone + bottleneck as the encoder, its head, its
# discriminator (ADAPT's DANN wants probabilities: a sigmoid after the logit).
classifier = build_classifier(cfg.model, source.num_classes)
disc = keras.Sequential([discriminator(classifier.features.output_shape[-1], 1024, "discriminator"),
                         keras.layers.Activation("sigmoid")])
a = cfg.adapt

class Annealed(keras.callbacks.Callback):
    # kerastl's (and TLlib's) lr / (1 + alpha p)^beta over the run's steps, set before every
    # step on ADAPT's three optimizers (ADAPT rebuilds optimizers from their configs, which
    # a custom schedule object does not survive).
    def on_train_batch_begin(self, batch, logs=None):
        p = min(float(self.model.optimizer.iterations.numpy()) / steps, 1.0)
        lr = a.lr / (1.0 + a.anneal_alpha * p) ** a.anneal_beta
        for o in (self.model.optimizer, self.model.optimizer_enc, self.model.optimizer_disc):
            o.learning_rate = lr

def sgd():
    return keras.optimizers.SGD(a.lr, momentum=0.9, nesterov=True, weight_decay=a.weight_decay)

batch = cfg.train.batch_size // 2  # 32 source + 32 target images per step, as kerastl's
per_epoch = -(-len(xs) // batch)
model = DANN(classifier.features, classifier.head, disc, Xt=xt, lambda_=tf.Variable(0.0),
             optimizer=sgd(), optimizer_enc=sgd(), optimizer_disc=sgd(), loss="categorical_crossentropy",
             random_state=0, verbose=0)
started = time.perf_counter()
model.fit(xs, ys, epochs=max(1, round(steps / per_epoch)), batch_size=batch, verbose=0,
          callbacks=[UpdateLambda(lambda_max=1.0, max_steps=steps, gamma=a.params.get("gamma", 10.0)), Annealed()])
fit_s = time.perf_counter() - started
accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test.argmax(-1)))
print(json.dumps({"fit_s": fit_s, "steps": max(1, round(steps / per_epoch)) * per_epoch,
                  "process_s": time.perf_counter() - t0, "target_test_accuracy": accuracy}))
"""


def adapt_peer(quick: bool) -> dict:
    """kerastl's DANN (configs/digits_dann.yaml as shipped) against ADAPT's DANN (the `adapt`
    package: pip install .[bench]) with kerastl's networks for that config (encoder =
    backbone + bottleneck, head, discriminator), its optimizer (SGD, Nesterov momentum,
    weight decay, annealed lr), lambda ramp, batch (32 + 32) and number of steps, on
    syndigits -> digits: whole-process wall time and target test accuracy. ADAPT reads
    in-memory arrays without augmentation (kerastl's config augments the source) and
    passes source and target through BN separately (kerastl: jointly)."""
    import subprocess
    import tempfile

    try:
        import adapt  # noqa: F401
    except ImportError:
        return {"missing": "the adapt package (pip install '.[bench]')"}
    steps = 150 if quick else 3000
    root = os.path.join(os.path.dirname(__file__), "..")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "kerastl", "train", "configs/digits_dann.yaml", "--quiet", "--out", tmp + "/k",
                        "--set", f"adapt.steps={steps}", "--set", "train.report=false"], check=True, cwd=root,
                       capture_output=True)
        kerastl_s = time.perf_counter() - start
        with open(tmp + "/k/metrics.json") as f:
            kerastl_accuracy = json.load(f)["target_test"]["accuracy"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _ADAPT_DANN, str(steps)], check=True, cwd=root, capture_output=True,
                          text=True)
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    peer["wall_s"] = time.perf_counter() - start
    return {"steps": steps, "kerastl_s": kerastl_s, "kerastl_accuracy": kerastl_accuracy, "adapt": peer,
            "speedup": peer["wall_s"] / kerastl_s}


def _photo_folder(root: str, n: int, seed: int = 0) -> list:
    """n camera-size JPEGs (640x480, quality 90) cut from the two photos scikit-learn ships
    (china.jpg, flower.jpg: 427x640): random crops, flips and brightness, two class folders."""
    import numpy as np
    from PIL import Image, ImageEnhance
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    paths = []
    for i in range(n):
        k = i % 2
        im = photos[k]
        w, h = rng.integers(320, 640), rng.integers(240, 427)
        x, y = rng.integers(0, im.width - w + 1), rng.integers(0, im.height - h + 1)
        crop = im.crop((x, y, x + w, y + h)).resize((640, 480), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))
        folder = os.path.join(root, ("china", "flower")[k])
        os.makedirs(folder, exist_ok=True)
        paths.append(os.path.join(folder, f"{i:05d}.jpg"))
        crop.save(paths[-1], quality=90)
    return paths


_RSS = """
import json, sys

def rss_mb(key="VmRSS"):  # VmHWM: the peak
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

import numpy as np
import tensorflow as tf
from kerastl.data.pipeline import build_dataset
from kerastl.data.splits import Split
listing = json.load(open(sys.argv[1]))
paths = listing["paths"] * int(sys.argv[2])
extra = {"in_graph": np.array(listing["in_graph"] * int(sys.argv[2]))} if "in_graph" in Split.__dataclass_fields__ else {}
split = Split(labels=np.arange(len(paths)) % 2, paths=paths, **extra)  # (older kerastl: no in_graph)
tf.constant(0)  # TensorFlow started before the baseline
base = rss_mb()
cache = sys.argv[3] == "memory"  # the default under cache_memory_mb; else decoded every epoch
for _ in build_dataset(split, 224, 32, 2, training=True, epochs=2, cache=cache):
    pass
print(json.dumps({"images": len(paths), "rss_growth_mb": rss_mb() - base, "peak_growth_mb": rss_mb("VmHWM") - base,
                  "cache_mb": len(paths) * 224 * 224 * 3 / 2**20}))
"""


def jpeg_pipeline(quick: bool) -> dict:
    """kerastl's input pipeline on a folder of 640x480 JPEGs at 224 px: the up-front check of
    every file, decode + resize + the default augmentation uncached (images per second, all
    cores), against what a MobileNetV3Small training step at 224 px consumes (batch 32), and
    the peak memory at 1x, 4x and 16x the files of the in-memory cache (the default under
    `cache_memory_mb`) and of streaming (decoded every epoch: above it, or `cache: false`)."""
    import dataclasses
    import subprocess
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.data.augment import build_augmenter
    from kerastl.config import DataConfig
    from kerastl.data.domain import load_domain
    from kerastl.data.pipeline import build_dataset
    from kerastl.models.factory import build_classifier
    from kerastl.training.transfer_model import TransferModel

    n = 400 if quick else 2000
    out = {"files": n, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        paths = _photo_folder(tmp, n)
        out["make_folder_s"] = time.perf_counter() - start
        start = time.perf_counter()
        # kerastl's image-folder loader: the up-front check of every file.
        domain = load_domain(DataConfig(dataset=tmp, val_fraction=0.0, test_fraction=0.0), 0, "bench")
        out["check_ms_per_file"] = 1000 * (time.perf_counter() - start) / n
        split = domain.splits["train"]
        out["decoded_in_graph"] = int(np.sum(split.in_graph)) if getattr(split, "in_graph", None) is not None else 0
        augmenter = build_augmenter(_default_config().source.augment, "source")
        rates = []
        for _ in range(2):
            ds = build_dataset(split, 224, 32, 2, training=True, augmenter=augmenter, cache=False, epochs=1)
            start, seen = time.perf_counter(), 0
            for x, _y in ds:
                seen += int(x.shape[0])
            rates.append(seen / (time.perf_counter() - start))
        out["pipeline_img_s"] = max(rates)
        out["pipeline_img_s_per_core"] = out["pipeline_img_s"] / out["cores"]

        cfg = _default_config(224)
        model_cfg = dataclasses.replace(cfg.model, backbone_args={}, bn="train")
        keras.utils.set_random_seed(0)
        model = TransferModel(build_classifier(model_cfg, 2))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        x = tf.random.uniform([32 * 4, 224, 224, 3], 0, 255)
        y = tf.one_hot(np.arange(32 * 4) % 2, 2)
        tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).repeat()
        step_s = _timed_fit(model, tensors, steps=4, repeats=2 if quick else 3)
        out["step_img_s"] = 32 / step_s
        out["ratio"] = out["pipeline_img_s"] / out["step_img_s"]

        listing = os.path.join(tmp, "paths.json")
        k = 100 if quick else 250
        in_graph = split.in_graph.tolist() if getattr(split, "in_graph", None) is not None else [False] * len(split)
        with open(listing, "w") as f:
            json.dump({"paths": split.paths[:k], "in_graph": in_graph[:k]}, f)
        out["rss"], out["rss_streamed"] = {}, {}
        for key, mode in (("rss", "memory"), ("rss_streamed", "stream")):
            for times in (1, 4, 16):
                proc = subprocess.run([sys.executable, "-c", _RSS, listing, str(times), mode], check=True,
                                      capture_output=True, text=True,
                                      cwd=os.path.join(os.path.dirname(__file__), ".."))
                out[key][f"{times}x"] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


ROWS = {"step_overhead": step_overhead, "adaptation_cost": adaptation_cost, "tflite_224": tflite_224,
        "hardware": hardware, "scaling": scaling, "frozen_features": frozen_features,
        "naive_fit": naive_fit, "adapt_peer": adapt_peer,
        "jpeg_pipeline": jpeg_pipeline}


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
