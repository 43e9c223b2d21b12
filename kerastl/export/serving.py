"""`kerastl export RUN`: a SavedModel in TF Serving's layout, RUN/serving/<version>/.

Built with Keras 3's export API (`keras.export.ExportArchive`). Two signatures:

- `serving_default(image_bytes: string[batch])`: JPEG/PNG/GIF/BMP bytes (what the REST
  API's `{"b64": ...}` turns into), decoded, composited on black if they have alpha,
  resized and preprocessed inside the graph;
- `serving_images(images: uint8[batch, height, width, 3])`: already decoded images of any
  size, resized inside the graph.

Both return `scores` (float32[batch, classes], in labels.txt order), `classes`
(string[batch, classes], the class name of every score), `top_k_scores` and
`top_k_classes` (float32/string[batch, k]).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np

from kerastl import runs
from kerastl.errors import KerastlError

SERVING = "serving"


def _decode(data, size: int):
    """Encoded image bytes -> (size, size, 3) float32, as kerastl's own reader decodes them."""
    import tensorflow as tf

    from kerastl.data.pipeline import resize

    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    image = tf.cast(image, tf.float32)
    channels = tf.shape(image)[-1]
    color = tf.cond(channels >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
    has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
    alpha = tf.cond(has_alpha, lambda: image[..., -1:] / 255.0, lambda: tf.ones_like(image[..., :1]))
    # Transparent pixels on black, rounded to 8 bits like kerastl's PIL reader.
    return resize(tf.round(color * alpha), size)


def build_archive(model, labels: list[str], size: int, top_k: int):
    import keras
    import tensorflow as tf

    from kerastl.data.pipeline import resize

    names = tf.constant(labels)
    k = min(top_k, len(labels))

    def outputs(images):
        scores = tf.cast(model(images, training=False), tf.float32)
        top_scores, top_index = tf.math.top_k(scores, k=k)
        batch = tf.shape(scores)[0]
        return {
            "scores": scores,
            "classes": tf.tile(names[None], [batch, 1]),
            "top_k_scores": top_scores,
            "top_k_classes": tf.gather(names, top_index),
        }

    def from_bytes(image_bytes):
        images = tf.map_fn(lambda b: _decode(b, size), image_bytes,
                           fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32))
        return outputs(images)

    def from_images(images):
        return outputs(resize(images, size))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_images", from_images,
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    return archive


def _png_bytes(images: np.ndarray) -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


# TF Serving replays these PredictionLog records when it loads a version, before the
# version takes traffic, so the first real request does not pay for graph warm-up.
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"


def grpc_request(image_bytes: list[bytes] | None = None, images: np.ndarray | None = None,
                 model_name: str = "kerastl"):
    """A TF Serving gRPC PredictRequest (tensorflow-serving-api): encoded images for
    `serving_default`, or uint8 images [batch, size, size, 3] for `serving_images`."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if image_bytes is not None:
        request.model_spec.signature_name = "serving_default"
        request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(image_bytes), dtype=tf.string))
    else:
        request.model_spec.signature_name = "serving_images"
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(np.asarray(images, np.uint8), dtype=tf.uint8))
    return request


def grpc_predict(signatures, request) -> dict:
    """What TF Serving does with a PredictRequest, in Python: the named signature of a
    loaded SavedModel run on the request's tensors; {output name: numpy array}. Used to test
    requests and the warm-up file without a server."""
    import tensorflow as tf

    fn = signatures[request.model_spec.signature_name or "serving_default"]
    inputs = {name: tf.constant(tf.make_ndarray(proto)) for name, proto in request.inputs.items()}
    return {name: t.numpy() for name, t in fn(**inputs).items()}


def write_warmup(export_dir: Path, images: np.ndarray, model_name: str = "kerastl") -> Path:
    """EXPORT/assets.extra/tf_serving_warmup_requests: one request per signature and batch
    size 1 and 8, made from `images` (uint8, the model's size)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(export_dir) / WARMUP
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.clip(np.round(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for n in (1, 8):
            batch = np.resize(images, (n, *images.shape[1:])) if len(images) < n else images[:n]
            for request in (grpc_request(image_bytes=_png_bytes(batch), model_name=model_name),
                            grpc_request(images=batch, model_name=model_name)):
                log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())
    return path


def read_warmup(export_dir: Path) -> list:
    """The PredictRequests of a version's warm-up file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(str(Path(export_dir) / WARMUP)):
        out.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request)
    return out


def next_version(base: Path) -> int:
    versions = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()] if base.exists() else []
    return max(versions, default=0) + 1


def export_serving(run_path: str, top_k: int = 5, min_agreement: float = 0.999, max_images: int | None = 1000):
    """Writes RUN/serving/<next version>/, checks it against model.keras, returns (path, row)."""
    from kerastl.export import verify
    from kerastl.export.artifacts import SERVING_INFO, SavedModelArtifact

    run = runs.require_run(run_path, need=(runs.MODEL, runs.LABELS, runs.CONFIG))
    if top_k < 1:
        raise KerastlError(f"--top-k {top_k}: must be at least 1")
    keras_model, data, reference = verify.keras_reference(run, max_images)
    base = run / SERVING
    base.mkdir(exist_ok=True)
    # Written under a hidden name (TF Serving ignores non-numeric folders), checked, then
    # renamed: a crash never leaves a half-written version for a server to pick up.
    tmp = base / f".tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_archive(keras_model.model, keras_model.labels, keras_model.size, top_k).write_out(str(tmp), verbose=False)
        info = tmp / SERVING_INFO
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps({"labels": keras_model.labels, "image_size": keras_model.size,
                                    "top_k": min(top_k, len(keras_model.labels))}) + "\n")
        artifact = SavedModelArtifact(tmp)
        row = verify.compare(artifact, reference, data)
        verify.require_agreement(row, min_agreement, "SavedModel (serving_images)")
        # serving_default decodes in its own graph: checked on the same images sent as PNG
        # (lossless: the check images hold uint8 values at the model's size).
        encoded = verify.compare(artifact, reference, data, latency_images=0,
                                 probs=artifact.predict_bytes(_png_bytes(data.images)))
        verify.require_agreement(encoded, min_agreement, "SavedModel (serving_default)")
        row["agreement_image_bytes"] = encoded["agreement"]
        row["max_score_diff"] = max(row["max_score_diff"], encoded["max_score_diff"])
        write_warmup(tmp, data.images[:8])
        version = next_version(base)
        path = base / str(version)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    row["file"] = str(path)
    verify.record(run, f"{SERVING}/{version}", row)
    return path, row


def rest_request(images: list[bytes], signature: str = "serving_default") -> dict:
    """The body of a TF Serving REST predict request for encoded images (row format)."""
    return {"signature_name": signature,
            "instances": [{"b64": base64.b64encode(data).decode("ascii")} for data in images]}


def rest_predict(signature_fn, body: dict) -> dict:
    """What TF Serving does with `body` for a one-input string signature, in Python.

    `{"b64": ...}` objects become bytes, the instances one batch; each output is split back
    into one object per instance (TF Serving's row format). Used to test request bodies
    against the loaded signature without a server.
    """
    import tensorflow as tf

    instances = body["instances"]
    data = [base64.b64decode(i["b64"]) if isinstance(i, dict) else i for i in instances]
    out = signature_fn(image_bytes=tf.constant(data))

    def plain(v):
        v = v.tolist() if isinstance(v, np.ndarray) else v
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v.decode() if isinstance(v, bytes) else v

    arrays = {name: t.numpy() for name, t in out.items()}
    return {"predictions": [{name: plain(a[i]) for name, a in sorted(arrays.items())}
                            for i in range(len(data))]}
