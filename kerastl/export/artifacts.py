"""One interface over every model format a run ships: Keras, SavedModel, TFLite, ONNX.

`load_artifact(path)` accepts a run directory, a `.keras` file, a SavedModel directory
(`RUN/serving/<version>`), a `.tflite` or an `.onnx` file and returns an `Artifact` that
knows its class names and input size and maps a batch of images (float32, 0..255, already
resized) to class probabilities. `predict` and the conversion checks use it, so every
format is measured the same way.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import ModelError

# Names inside exported files (documented in docs/shipping.md, read back here).
TFLITE_LABELS = "labels.txt"  # zip member appended to the .tflite (TFLite associated-file layout)
ONNX_LABELS_KEY = "labels"  # ONNX metadata_props key, JSON list of class names
# TF Serving's place for files beside a SavedModel: labels and input size.
SERVING_INFO = "assets.extra/kerastl.json"


class Artifact:
    format = ""

    def __init__(self, path: Path, labels: list[str], size: int):
        self.path, self.labels, self.size = Path(path), labels, size

    def predict(self, images: np.ndarray) -> np.ndarray:
        """(N, size, size, 3) float32 pixels 0..255 -> (N, classes) probabilities."""
        raise NotImplementedError

    def predict_files(self, images: list[np.ndarray], files: list[str]) -> np.ndarray:
        """Probabilities for decoded+resized `images` read from `files`.

        Formats that decode inside the model (the SavedModel) use the files instead.
        """
        return self.predict(np.stack(images))

    def latency_ms(self, images: np.ndarray, repeats: int = 50) -> float:
        """Median wall time of one image at batch 1, after a warm-up."""
        one = images[:1]
        for _ in range(3):
            self.predict(one)
        times = []
        for i in range(repeats):
            x = images[i % len(images)][None]
            start = time.perf_counter()
            self.predict(x)
            times.append(time.perf_counter() - start)
        return 1000.0 * float(np.median(times))

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return self.path.stat().st_size


class KerasArtifact(Artifact):
    format = "keras"

    def __init__(self, path: Path, labels: list[str]):
        import tensorflow as tf

        self.model = runs.load_keras(path)  # safe mode: a file runs no code of its own
        self._call = tf.function(lambda x: self.model(x, training=False))
        super().__init__(path, labels, int(self.model.input_shape[1]))

    def predict(self, images):
        out = []
        for start in range(0, len(images), 64):
            out.append(np.asarray(self._call(np.asarray(images[start : start + 64], np.float32))))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


class SavedModelArtifact(Artifact):
    """A SavedModel written by `kerastl export`: decoding and resizing run inside it."""

    format = "savedmodel"

    def __init__(self, path: Path):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))
        sigs = self.loaded.signatures
        if "serving_default" not in sigs or "serving_images" not in sigs:
            raise ModelError(
                f"{path}: a SavedModel without kerastl's signatures (has: {', '.join(sigs) or 'none'}); "
                "make one with `kerastl export RUN`"
            )
        self.bytes_fn, self.images_fn = sigs["serving_default"], sigs["serving_images"]
        info = json.loads((Path(path) / SERVING_INFO).read_text())
        super().__init__(path, info["labels"], int(info["image_size"]))

    def predict(self, images):
        import tensorflow as tf

        # Pipeline images are already resized and hold uint8 values: the in-graph resize to
        # the same size is the identity, so this is the exact input the Keras model saw.
        x = np.clip(np.round(images), 0, 255).astype(np.uint8)
        return self.images_fn(images=tf.constant(x))["scores"].numpy()

    def predict_files(self, images, files):
        return self.predict_bytes([Path(f).read_bytes() for f in files])

    def predict_bytes(self, data: list[bytes], batch: int = 64):
        """serving_default on encoded images (what a REST or gRPC client sends)."""
        import tensorflow as tf

        return np.concatenate([self.bytes_fn(image_bytes=tf.constant(data[i:i + batch]))["scores"].numpy()
                               for i in range(0, len(data), batch)])


class TFLiteArtifact(Artifact):
    format = "tflite"

    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:  # pragma: no cover - a dependency of kerastl
            raise ModelError("running .tflite files needs ai-edge-litert: pip install ai-edge-litert") from err
        labels = read_tflite_labels(path)
        from kerastl.native_logs import native_stderr_silenced

        with native_stderr_silenced():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate"
            self.interpreter = Interpreter(model_path=str(path), num_threads=None)
            self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batch = None
        super().__init__(path, labels, int(self.input["shape"][1]))

    def _run(self, x):
        it = self.interpreter
        if self._batch != len(x):
            it.resize_tensor_input(self.input["index"], [len(x), self.size, self.size, 3])
            it.allocate_tensors()
            self.input = it.get_input_details()[0]
            self.output = it.get_output_details()[0]
            self._batch = len(x)
        dtype = self.input["dtype"]
        if dtype != np.float32:  # integer input: quantize with the tensor's own parameters
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        it.set_tensor(self.input["index"], x.astype(dtype))
        it.invoke()
        y = it.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    def predict(self, images):
        images = np.asarray(images, np.float32)
        out = [self._run(images[s : s + 32]) for s in range(0, len(images), 32)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


class OnnxArtifact(Artifact):
    format = "onnx"

    def __init__(self, path: Path):
        onnx, ort = import_onnx()
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if ONNX_LABELS_KEY not in meta:
            raise ModelError(f"{path}: no '{ONNX_LABELS_KEY}' metadata; make the file with `kerastl convert --format onnx`")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        super().__init__(path, json.loads(meta[ONNX_LABELS_KEY]), int(self.session.get_inputs()[0].shape[1]))

    def predict(self, images):
        return self.session.run(None, {self.input_name: np.asarray(images, np.float32)})[0]


def import_onnx():
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as err:
        raise ModelError(
            "ONNX needs tf2onnx, onnx and onnxruntime: pip install 'kerastl[onnx]'"
        ) from err
    return onnx, ort


def read_tflite_labels(path: Path) -> list[str]:
    """Class names from the zip archive appended to a .tflite written by kerastl."""
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read(TFLITE_LABELS).decode()
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelError(
            f"{path}: no embedded {TFLITE_LABELS}; make the file with `kerastl convert RUN`"
        ) from err
    return [line for line in text.splitlines() if line]


# File formats a converted model comes in: file suffix -> the Artifact class that runs it.
# `kerastl convert --format` offers these, and `predict` loads them by suffix.
FILE_FORMATS = {".tflite": TFLiteArtifact, ".onnx": OnnxArtifact}


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def load_artifact(target: str | Path) -> Artifact:
    """A run directory, .keras, SavedModel directory, .tflite or .onnx -> Artifact."""
    path = Path(target)
    if not path.exists():
        raise ModelError(f"{target}: no such run directory or model file")
    if path.is_dir():
        if is_saved_model(path):
            return SavedModelArtifact(path)
        run = runs.require_run(path, need=(runs.MODEL, runs.LABELS))
        return KerasArtifact(run / runs.MODEL, runs.read_labels(run))
    suffix = path.suffix.lower()
    if suffix == ".keras":
        labels_file = path.parent / runs.LABELS
        if not labels_file.is_file():
            raise ModelError(f"{target}: needs {runs.LABELS} beside it (one class name per line, in output order)")
        return KerasArtifact(path, runs.read_labels(path.parent))
    if suffix in FILE_FORMATS:
        return FILE_FORMATS[suffix](path)
    raise ModelError(
        f"{target}: not a model kerastl can run; give a run directory, a .keras file, a SavedModel "
        f"directory (RUN/serving/<version>) or a {' or '.join(FILE_FORMATS)} file"
    )
