"""`kerastl convert RUN`: TFLite (float, dynamic-range, float16, full int8) and ONNX.

TFLite goes through a SavedModel (`model.export`, then `TFLiteConverter.from_saved_model`;
`from_keras_model` is unreliable with Keras 3). The class names travel inside the file:
a zip archive holding labels.txt is appended to the flatbuffer, the layout TFLite
metadata uses for associated files (`zipfile.ZipFile("model.tflite").read("labels.txt")`).
With the `mobile` extra the file also gets the image-classifier metadata that MediaPipe
Tasks and the TFLite Task Library read (`tflite_metadata`). ONNX keeps the names in the
model's `metadata_props`. Each converted file is run on the run's test images (LiteRT /
onnxruntime, and MediaPipe's ImageClassifier when installed), compared with model.keras,
and only renamed into place when every check's top-1 agreement reaches the floor.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError
from kerastl.export import tflite_metadata

FORMATS = ("tflite", "onnx")  # each a suffix in artifacts.FILE_FORMATS
QUANTIZE = ("none", "dynamic", "float16", "int8")
IO_TYPES = ("float32", "uint8", "int8")
# Default top-1 agreement floors: float formats must agree (almost) everywhere, int8 may
# flip a few borderline images.
MIN_AGREEMENT = {"none": 0.99, "float16": 0.99, "dynamic": 0.97, "int8": 0.95, "onnx": 0.99}


def output_name(quantize: str, fmt: str = "tflite", io_type: str = "float32") -> str:
    if fmt == "onnx":
        return "model.onnx"
    name = "model" if quantize == "none" else f"model-{quantize}"
    if io_type != "float32":
        name += f"-{io_type}io"
    return name + ".tflite"


def calibration_images(run: Path, size: int, count: int):
    """(up to `count` images of the run's training data, what they are): the target's
    training images first (the domain the model will see: for an adapted run its
    unlabelled target images), then the source's."""
    from kerastl.export.verify import run_images

    cfg = runs.read_config(run)
    target = run_images(run, size, split="train", max_images=count)
    images, parts = target.images, [f"{target.source} ({len(target.images)})"]
    if len(images) < count and cfg.source is not None:
        more = run_images(run, size, split="train", max_images=count - len(images), which="source")
        images = np.concatenate([images, more.images])
        parts.append(f"{more.source} ({len(more.images)})")
    return images, " + ".join(parts)


def tflite_bytes(model, quantize: str, io_type: str, calibration) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":

            def representative():
                for image in calibration:
                    yield [image[None].astype(np.float32)]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if io_type != "float32":
                converter.inference_input_type = getattr(tf, io_type)
                converter.inference_output_type = getattr(tf, io_type)
        return converter.convert()


def hard_swish_layers(model) -> int:
    """How many hard-swish activations `model` has (MobileNetV3 without `minimalistic`),
    nested models included.

    LiteRT's XNNPACK CPU delegate (ai-edge-litert 2.x) runs float32 hard-swish but not int8:
    every int8 HARD_SWISH op runs on the reference kernels and splits the graph into many
    delegate partitions, so on x86 such an int8 model can run slower than float32. The
    minimalistic variant has no hard-swish.
    """
    from kerastl.models.factory import leaf_layers

    # (Keras 3 names the activation hard_silu)
    return sum(str(layer.get_config().get("activation", "")) in ("hard_silu", "hard_swish") for layer in leaf_layers(model))


def with_labels(flatbuffer: bytes, labels: list[str]) -> bytes:
    from kerastl.export.artifacts import TFLITE_LABELS

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(TFLITE_LABELS, "\n".join(labels) + "\n")
    return flatbuffer + archive.getvalue()


def describe(run: Path, keras_model) -> tuple[str, str]:
    """(name, description) for the TFLite metadata."""
    cfg = runs.read_config(run)
    trained = Path(cfg.target.dataset).name or cfg.target.dataset  # a folder: its name
    return cfg.name, (f"{cfg.model.backbone} image classifier ({len(keras_model.labels)} classes) trained "
                      f"with kerastl on {trained}. Input: RGB pixels 0-255, {keras_model.size}x{keras_model.size}.")


def mediapipe_check(blob: bytes, path: Path, reference: np.ndarray, data) -> dict:
    """The exports-table row of the file as MediaPipe's ImageClassifier task runs it."""
    top, ms = tflite_metadata.classify(blob, data.images)
    return {"format": "mediapipe", "file": str(path), "size_mb": round(len(blob) / 2**20, 3),
            "agreement": float(np.mean(top == reference.argmax(axis=1))),
            "accuracy": float(np.mean(top == data.labels)), "max_score_diff": None,
            "latency_ms": round(ms, 3), "images": data.source + f" ({len(data.labels)})"}


def onnx_bytes(model, labels: list[str]) -> bytes:
    from kerastl.export.artifacts import ONNX_LABELS_KEY, import_onnx

    onnx, _ = import_onnx()
    try:
        import tf2onnx  # noqa: F401  (Keras' ONNX export needs it)
    except ImportError as err:
        raise KerastlError("ONNX export needs tf2onnx: pip install 'kerastl[onnx]'") from err
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        model.export(path, format="onnx", verbose=False)
        proto = onnx.load(path)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_LABELS_KEY, json.dumps(labels)
    return proto.SerializeToString()


def convert_run(run_path: str, fmt: str = "tflite", quantize: str = "none", io_type: str = "float32",
                calibration_size: int = 200, min_agreement: float | None = None,
                max_images: int | None = 1000, echo=print) -> tuple[Path, dict, dict]:
    """Converts RUN's model.keras; returns (path, row for the file, row for model.keras)."""
    from kerastl.export import verify
    from kerastl.export.artifacts import FILE_FORMATS

    run = runs.require_run(run_path, need=(runs.MODEL, runs.LABELS, runs.CONFIG))
    if fmt not in FORMATS:
        raise KerastlError(f"--format {fmt}: must be one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise KerastlError(f"--quantize {quantize}: must be one of {', '.join(QUANTIZE)}")
    if io_type not in IO_TYPES:
        raise KerastlError(f"--io-type {io_type}: must be one of {', '.join(IO_TYPES)}")
    if io_type != "float32" and quantize != "int8":
        raise KerastlError(f"--io-type {io_type}: integer inputs and outputs need --quantize int8")
    if fmt == "onnx" and (quantize != "none" or io_type != "float32"):
        raise KerastlError("--format onnx: --quantize and --io-type apply to TFLite only")
    if calibration_size < 1:
        raise KerastlError(f"--calibration-size {calibration_size}: must be at least 1")
    floor = MIN_AGREEMENT["onnx" if fmt == "onnx" else quantize] if min_agreement is None else min_agreement

    keras_model, data, reference = verify.keras_reference(run, max_images)
    calibrated_on, mediapipe_row = None, None
    not_in_mediapipe = "not a TFLite file"  # why MediaPipe does not check the file (None: it does)
    if fmt == "onnx":
        echo("Exporting ONNX (tf2onnx) ...")
        blob = onnx_bytes(keras_model.model, keras_model.labels)
    else:
        calibration = None
        if quantize == "int8":
            calibration, calibrated_on = calibration_images(run, keras_model.size, calibration_size)
            echo(f"Calibrating int8 on {calibrated_on} ...")
            slow = hard_swish_layers(keras_model.model)
            if slow:
                echo(f"Note: the model has {slow} hard-swish activations, which LiteRT's XNNPACK CPU delegate "
                     "does not run in int8: on x86 CPUs this int8 file can be slower than float32 (MobileNetV3's "
                     "minimalistic variant has no hard-swish). The latency below is this machine's; measure on the device you ship to.")
        echo(f"Converting to TFLite (quantize: {quantize}) ...")
        blob = tflite_bytes(keras_model.model, quantize, io_type, calibration)
        not_in_mediapipe = tflite_metadata.unavailable()
        if not_in_mediapipe:
            echo(f"No MediaPipe metadata (labels only): {not_in_mediapipe}")
            blob = with_labels(blob, keras_model.labels)
        else:
            blob = tflite_metadata.with_metadata(blob, keras_model.labels, *describe(run, keras_model))
            if io_type == "int8":
                not_in_mediapipe = "its ImageClassifier takes float32 or uint8 inputs, not int8"
                echo(f"Not checked in MediaPipe: {not_in_mediapipe} (for MediaPipe apps use --io-type uint8)")

    path = run / output_name(quantize, fmt, io_type)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        tmp.write_bytes(blob)
        artifact = FILE_FORMATS[path.suffix](tmp)
        echo(f"Checking against model.keras on {len(data.labels)} images of {data.source} ...")
        row = verify.compare(artifact, reference, data)
        row["quantize"], row["io_type"], row["min_agreement"] = quantize, io_type, floor
        if calibrated_on:
            row["calibration"] = calibrated_on
        verify.require_agreement(row, floor, path.name)
        del artifact  # release the file before renaming it
        if not not_in_mediapipe:
            echo("Checking in MediaPipe's ImageClassifier task ...")
            mediapipe_row = mediapipe_check(blob, path, reference, data)
            verify.require_agreement(mediapipe_row, floor, f"{path.name} in MediaPipe")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if not (run / runs.LABELS).exists():
        runs.atomic_write(run / runs.LABELS, "\n".join(keras_model.labels) + "\n")
    row["file"] = str(path)
    verify.record(run, path.name, row)
    if fmt == "tflite":  # no row when not checked there: an older row described an older file
        verify.record(run, f"{path.name} (MediaPipe)", mediapipe_row)
    keras_row = verify.compare(keras_model, None, data, probs=reference)
    verify.record(run, runs.MODEL, keras_row)
    return path, row, keras_row
