"""MobileNetV3Small at 224 px, as Keras builds it and its `minimalistic` variant (no
hard-swish, no squeeze-and-excitation; the digits configs' backbone): TFLite float32 vs
full-integer int8, see `_tflite_pair`. LiteRT's XNNPACK delegate runs int8 hard-swish
outside the delegate (see kerastl.export.convert.hard_swish_layers), so the two differ.

    python benchmarks/perf/tflite_224.py [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import time



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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(tflite_224(parser.parse_args().quick)), flush=True)
