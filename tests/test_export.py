"""Shipping a run: SavedModel (TF Serving), TFLite in LiteRT, ONNX in onnxruntime, predict on each."""

import json
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from kerastl.cli import main
from kerastl.errors import KerastlError
from kerastl.export.tflite_metadata import unavailable

MEDIAPIPE_MISSING = unavailable()
needs_mediapipe = pytest.mark.skipif(bool(MEDIAPIPE_MISSING), reason=f"{MEDIAPIPE_MISSING}")


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory):
    """A copy of the shared tiny run, so exports written here do not leak into other tests."""
    dst = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run.run_dir, dst, ignore=shutil.ignore_patterns("checkpoint", "logs"))
    return dst


@pytest.fixture(scope="module")
def pngs(run, tmp_path_factory):
    """Eight target test images as 32x32 PNG files (the model's input size: no resampling)."""
    from PIL import Image

    from kerastl.export.verify import run_images

    data = run_images(run, 32, max_images=8)
    folder = tmp_path_factory.mktemp("pngs")
    files = []
    for i, image in enumerate(data.images):
        path = folder / f"{i}.png"
        Image.fromarray(image.astype(np.uint8)).save(path)
        files.append(str(path))
    return files, data.images


@pytest.fixture(scope="module")
def keras_model(run):
    from kerastl import runs
    from kerastl.export.artifacts import KerasArtifact

    return KerasArtifact(run / runs.MODEL, runs.read_labels(run))


@pytest.fixture(scope="module")
def serving(run):
    from kerastl.export.serving import export_serving

    path, row = export_serving(str(run), top_k=3, max_images=100)
    return path, row


def test_export_writes_versions_and_never_overwrites(run, serving):
    from kerastl.export.serving import export_serving

    path, row = serving
    assert path == run / "serving" / "1"
    # Both signatures were checked: serving_images on the arrays, serving_default on PNGs.
    assert row["agreement"] == 1.0 and row["agreement_image_bytes"] == 1.0 and row["max_score_diff"] < 1e-5
    again, _ = export_serving(str(run), top_k=3, max_images=20)
    assert again == run / "serving" / "2"
    assert (path / "saved_model.pb").is_file()
    assert not [p for p in (run / "serving").iterdir() if p.name.startswith(".")]
    assert "serving/1" in json.loads((run / "exports.json").read_text())


def test_export_under_the_floor_writes_nothing(run, serving, monkeypatch):
    from kerastl.export import serving as serving_module
    from kerastl.export.artifacts import SavedModelArtifact

    before = sorted(p.name for p in (run / "serving").iterdir())
    table = json.loads((run / "exports.json").read_text())
    # A serving_default that decodes differently from kerastl's reader (here: upside down).
    real = SavedModelArtifact.predict_bytes
    monkeypatch.setattr(SavedModelArtifact, "predict_bytes",
                        lambda self, data, batch=64: real(self, data, batch)[::-1])
    result = CliRunner().invoke(main, ["export", str(run), "--max-images", "40"])
    assert result.exit_code == 2, result.output
    assert "SavedModel (serving_default): top-1 agreement with the Keras model is" in result.output
    assert "under the floor 0.999; nothing was written" in result.output
    assert sorted(p.name for p in (run / "serving").iterdir()) == before
    assert json.loads((run / "exports.json").read_text()) == table
    assert serving_module.next_version(run / "serving") == len(before) + 1


def test_saved_model_cli_lists_both_signatures(serving):
    path, _ = serving
    cli = shutil.which("saved_model_cli")
    cmd = [cli] if cli else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    out = subprocess.run(cmd + ["show", "--dir", str(path), "--all"], capture_output=True, text=True,
                         check=True).stdout
    default = out[out.index("signature_def['serving_default']"):out.index("signature_def['serving_images']")]
    images = out[out.index("signature_def['serving_images']"):]
    assert "inputs['image_bytes']" in default and "DT_STRING" in default and "shape: (-1)" in default
    assert "inputs['images']" in images and "DT_UINT8" in images and "shape: (-1, -1, -1, 3)" in images
    for name, shape in [("scores", "(-1, 10)"), ("classes", "(-1, 10)"), ("top_k_scores", "(-1, 3)"),
                        ("top_k_classes", "(-1, 3)")]:
        block = default[default.index(f"outputs['{name}']"):]
        assert shape in block.split("name:")[0], (name, block[:200])


def test_fresh_tensorflow_process_loads_it_and_predicts_like_keras(serving, pngs, keras_model, tmp_path):
    path, _ = serving
    files, images = pngs
    np.save(tmp_path / "images.npy", images.astype(np.uint8))
    script = f"""
import json, sys
import numpy as np
import tensorflow as tf
m = tf.saved_model.load({str(path)!r})
x = np.load({str(tmp_path / "images.npy")!r})
a = m.signatures["serving_images"](images=tf.constant(x))
data = [open(f, "rb").read() for f in {files!r}]
b = m.signatures["serving_default"](image_bytes=tf.constant(data))
assert "kerastl" not in sys.modules
print(json.dumps({{"images": a["scores"].numpy().tolist(), "bytes": b["scores"].numpy().tolist(),
                  "top": [c.decode() for c in b["top_k_classes"].numpy()[:, 0]]}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = keras_model.predict(images)
    np.testing.assert_allclose(out["images"], expected, atol=1e-5)
    np.testing.assert_allclose(out["bytes"], expected, atol=1e-5)
    assert out["top"] == [keras_model.labels[i] for i in expected.argmax(1)]


def test_rest_request_body_is_accepted_by_the_signature(serving, pngs, keras_model):
    import tensorflow as tf

    from kerastl.export.serving import rest_predict, rest_request

    path, _ = serving
    files, images = pngs
    body = json.loads(json.dumps(rest_request([open(f, "rb").read() for f in files[:2]])))
    assert body["signature_name"] == "serving_default" and set(body["instances"][0]) == {"b64"}
    response = rest_predict(tf.saved_model.load(str(path)).signatures["serving_default"], body)
    expected = keras_model.predict(images[:2])
    assert len(response["predictions"]) == 2
    for pred, probs in zip(response["predictions"], expected):
        assert set(pred) == {"classes", "scores", "top_k_classes", "top_k_scores"}
        assert pred["classes"] == keras_model.labels
        assert pred["top_k_classes"][0] == keras_model.labels[int(probs.argmax())]
        np.testing.assert_allclose(pred["scores"], probs, atol=1e-5)
    json.dumps(response)  # the response body is plain JSON


# Floors for the tiny, barely trained test model (target accuracy ~0.4: many borderline
# images); the CLI defaults are stricter and meant for trained models.
@pytest.mark.parametrize("quantize,io_type,floor", [
    ("none", "float32", 0.99), ("dynamic", "float32", 0.9), ("float16", "float32", 0.97),
    ("int8", "float32", 0.85), ("int8", "uint8", 0.85), ("int8", "int8", 0.85),
])
def test_every_quantization_converts_runs_in_litert_and_agrees(run, quantize, io_type, floor):
    from kerastl.export.artifacts import TFLiteArtifact, read_tflite_labels
    from kerastl.export.convert import convert_run

    path, row, keras_row = convert_run(str(run), quantize=quantize, io_type=io_type, calibration_size=50,
                                       min_agreement=floor, max_images=200, echo=lambda s: None)
    assert path.name == {"none": "model.tflite"}.get(quantize, f"model-{quantize}" + (
        f"-{io_type}io" if io_type != "float32" else "") + ".tflite")
    assert row["agreement"] >= floor and row["latency_ms"] > 0 and row["size_mb"] > 0
    assert keras_row["agreement"] is None and keras_row["format"] == "keras"
    labels = (run / "labels.txt").read_text().split()
    assert read_tflite_labels(path) == labels
    artifact = TFLiteArtifact(path)
    assert artifact.input["dtype"] == np.dtype(io_type)
    assert artifact.output["dtype"] == np.dtype(io_type)  # "integer in/out" with --io-type
    assert json.loads((run / "exports.json").read_text())[path.name]["agreement"] == row["agreement"]
    assert path.name in (run / "exports.txt").read_text()
    # int8 is calibrated on the target's training images (the domain the model will see)
    # and the exports table says so
    assert row.get("calibration") == ("digits:train (50)" if quantize == "int8" else None)
    # with the mobile extra, MediaPipe's ImageClassifier ran the same file (not int8 inputs:
    # it takes float32 or uint8) and its row is in the table
    in_mediapipe = json.loads((run / "exports.json").read_text()).get(f"{path.name} (MediaPipe)")
    if MEDIAPIPE_MISSING or io_type == "int8":
        assert in_mediapipe is None
    else:
        assert in_mediapipe["agreement"] >= floor and in_mediapipe["format"] == "mediapipe"


def test_labels_are_recoverable_from_the_tflite_file_alone(run, tmp_path):
    from kerastl.export.convert import convert_run

    path, _, keras_row = convert_run(str(run), echo=lambda s: None)
    # The Keras row is the reference (no agreement with itself); on the whole test split its
    # accuracy is the one the training run reported.
    assert keras_row["agreement"] is None and keras_row["images"] == "digits:test (359)"
    metrics = json.loads((run / "metrics.json").read_text())
    assert keras_row["accuracy"] == pytest.approx(metrics["target_test"]["accuracy"], abs=1e-9)
    assert "reference" in (run / "exports.txt").read_text()
    alone = tmp_path / "phone" / "model.tflite"
    alone.parent.mkdir()
    shutil.copy(path, alone)
    with zipfile.ZipFile(alone) as z:
        assert z.read("labels.txt").decode().split() == (run / "labels.txt").read_text().split()


def test_conversion_under_the_floor_fails_and_keeps_the_old_file(run):
    from kerastl.export.convert import convert_run

    target = run / "model-int8.tflite"
    target.write_bytes(b"the good model from before")
    with pytest.raises(KerastlError, match="under the floor 1.0; nothing was written"):
        convert_run(str(run), quantize="int8", calibration_size=20, min_agreement=1.0, max_images=200,
                    echo=lambda s: None)
    assert target.read_bytes() == b"the good model from before"
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
    target.unlink()


def test_onnx_export_runs_in_onnxruntime_and_agrees(run):
    from kerastl.export.artifacts import OnnxArtifact
    from kerastl.export.convert import convert_run

    path, row, _ = convert_run(str(run), fmt="onnx", max_images=100, echo=lambda s: None)
    assert path.name == "model.onnx" and row["agreement"] == 1.0 and row["max_score_diff"] < 1e-4
    assert OnnxArtifact(path).labels == (run / "labels.txt").read_text().split()


def test_predict_gives_the_same_labels_on_every_format(run, serving, pngs):
    from kerastl.export.convert import convert_run
    from kerastl.predict import predict_images

    files, _ = pngs
    for fmt in ("tflite", "onnx"):
        if not (run / f"model.{fmt}").exists():
            convert_run(str(run), fmt=fmt, max_images=50, echo=lambda s: None)
    targets = [run, run / "model.keras", serving[0], run / "model.tflite", run / "model.onnx"]
    results = {str(t): predict_images(str(t), files, top_k=2) for t in targets}
    reference = results[str(run)]
    for target, res in results.items():
        assert [r["predictions"][0]["label"] for r in res] == [r["predictions"][0]["label"] for r in reference], target
        for r, ref in zip(res, reference):
            assert r["predictions"][0]["probability"] == pytest.approx(ref["predictions"][0]["probability"], abs=1e-4)


def test_predict_on_a_tflite_file_leaves_the_terminal_clean(run, pngs):
    """LiteRT announces its XNNPACK delegate from C++ and TensorFlow may print CUDA probing
    lines mid-run; the CLI keeps both off the terminal (`--verbose` shows them)."""
    from kerastl.export.convert import convert_run

    if not (run / "model.tflite").exists():
        convert_run(str(run), fmt="tflite", max_images=50, echo=lambda s: None)
    files, _ = pngs
    proc = subprocess.run([sys.executable, "-c", "from kerastl.cli import main; main()", "predict",
                           str(run / "model.tflite"), files[0]], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == "" and "XNNPACK" not in proc.stdout, proc.stderr[-2000:]


def test_cli_convert_and_predict_report_user_mistakes(run, pngs, tmp_path):
    cli = CliRunner()
    result = cli.invoke(main, ["convert", str(run), "--io-type", "uint8"])
    assert result.exit_code == 2 and "integer inputs and outputs need --quantize int8" in result.output
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"not a model")
    image = pngs[0][0]
    result = cli.invoke(main, ["predict", str(bogus), image])
    assert result.exit_code == 2 and "no embedded labels.txt" in result.output
    result = cli.invoke(main, ["predict", str(tmp_path / "nothing.onnx"), image])
    assert result.exit_code == 2 and "no such run directory or model file" in result.output
    result = cli.invoke(main, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "model.keras" in result.output


def test_the_warm_up_file_replays_through_both_signatures(serving, keras_model):
    """assets.extra/tf_serving_warmup_requests: PredictionLogs TF Serving replays on load;
    read back, every request runs through its signature and matches model.keras."""
    import tensorflow as tf

    from kerastl.export.serving import WARMUP, grpc_predict, read_warmup

    path, _ = serving
    assert (path / WARMUP).exists()
    requests = read_warmup(path)
    assert sorted((r.model_spec.signature_name, next(iter(r.inputs.values())).tensor_shape.dim[0].size)
                  for r in requests) == [("serving_default", 1), ("serving_default", 8),
                                         ("serving_images", 1), ("serving_images", 8)]
    signatures = tf.saved_model.load(str(path)).signatures
    for request in requests:
        out = grpc_predict(signatures, request)
        assert out["scores"].shape == (len(out["scores"]), len(keras_model.labels))
    # the uint8 images of the batch-8 requests give model.keras's scores through both signatures
    by_signature = {r.model_spec.signature_name: r for r in requests if len(grpc_predict(signatures, r)["scores"]) == 8}
    expected = keras_model.predict(tf.make_ndarray(by_signature["serving_images"].inputs["images"]).astype("float32"))
    for request in by_signature.values():
        np.testing.assert_allclose(grpc_predict(signatures, request)["scores"], expected, atol=1e-5)


def test_grpc_request_as_the_readme_builds_it_is_answered_like_the_rest_one(serving, pngs, keras_model):
    import tensorflow as tf

    from kerastl.export.serving import grpc_predict, grpc_request

    path, _ = serving
    files, images = pngs
    request = grpc_request([open(files[0], "rb").read()])  # as in the README
    assert request.model_spec.name == "kerastl" and request.model_spec.signature_name == "serving_default"
    out = grpc_predict(tf.saved_model.load(str(path)).signatures, request)
    np.testing.assert_allclose(out["scores"], keras_model.predict(images[:1]), atol=1e-5)
    assert out["top_k_classes"][0][0].decode() == keras_model.labels[int(keras_model.predict(images[:1]).argmax())]


def test_the_documented_rest_request_is_digit_1794():
    """The shipping guide's request body decodes to scikit-learn's digit 1794, as it says."""
    import base64
    import io
    import re
    from pathlib import Path

    from PIL import Image
    from sklearn.datasets import load_digits

    guide = (Path(__file__).resolve().parent.parent / "docs" / "shipping.md").read_text()
    body = json.loads(re.search(r'```json\n(\{"signature_name".*?)\n```', guide, re.S).group(1))
    assert body["signature_name"] == "serving_default" and len(body["instances"]) == 1
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["instances"][0]["b64"]))))
    digits = load_digits()
    np.testing.assert_array_equal(pixels, np.round(digits.images[1794] / 16 * 255).astype(np.uint8))
    assert digits.target[1794] == 8


@needs_mediapipe
def test_tflite_metadata_is_what_mediapipe_apps_read(run, keras_model):
    """The float file's metadata (name, normalization = the model's own, labels) read back,
    and MediaPipe's ImageClassifier task names the same classes as model.keras."""
    from mediapipe.tasks.python.metadata import metadata

    from kerastl.export import tflite_metadata
    from kerastl.export.convert import convert_run
    from kerastl.export.verify import run_images

    path = run / "model.tflite"
    if not path.exists():
        convert_run(str(run), max_images=50, echo=lambda s: None)
    shown = json.loads(metadata.MetadataDisplayer.with_model_file(str(path)).get_metadata_json())
    assert shown["name"] == "tiny" and "MobileNetV3Small" in shown["description"]
    assert shown["min_parser_version"] == "1.0.0"
    image_input = shown["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image_input["process_units"][0]["options"] == {"mean": [0.0], "std": [1.0]}
    assert shown["subgraph_metadata"][0]["output_tensor_metadata"][0]["associated_files"][0]["name"] == "labels.txt"
    data = run_images(run, 32, max_images=40)
    top, _ = tflite_metadata.classify(path.read_bytes(), data.images)
    assert np.array_equal(top, keras_model.predict(data.images).argmax(axis=1))


@needs_mediapipe
def test_minimum_parser_version_follows_the_schema_members_used():
    """The Python stand-in for the compiled module the mediapipe wheels lack."""
    import flatbuffers
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    from kerastl.export.tflite_metadata import minimum_parser_version

    def version(**graph_fields):
        graph = fb.SubGraphMetadataT()
        for key, value in graph_fields.items():
            setattr(graph, key, value)
        meta = fb.ModelMetadataT()
        meta.subgraphMetadata = [graph]
        builder = flatbuffers.Builder(0)
        builder.Finish(meta.Pack(builder), b"M001")
        return minimum_parser_version(builder.Output())

    vocabulary = fb.AssociatedFileT()
    vocabulary.type = fb.AssociatedFileType.VOCABULARY
    labels = fb.AssociatedFileT()
    labels.type = fb.AssociatedFileType.TENSOR_AXIS_LABELS
    assert version(associatedFiles=[labels]) == "1.0.0"
    assert version(associatedFiles=[labels, vocabulary]) == "1.0.1"
    assert version(inputProcessUnits=[]) == "1.1.0"
    assert version(inputTensorGroups=[], associatedFiles=[vocabulary]) == "1.2.0"
    assert version(customMetadata=[]) == "1.5.0"


def test_without_the_mobile_extra_the_tflite_file_keeps_its_labels(run, monkeypatch):
    from kerastl.export import tflite_metadata
    from kerastl.export.artifacts import read_tflite_labels
    from kerastl.export.convert import convert_run

    from kerastl.export import verify

    monkeypatch.setattr(tflite_metadata, "unavailable", lambda: "MediaPipe is not installed (test)")
    # a row from an earlier conversion that MediaPipe did check: it no longer describes the file
    verify.record(run, "model-dynamic.tflite (MediaPipe)", {
        "format": "mediapipe", "file": "stale", "size_mb": 0.0, "agreement": 1.0, "accuracy": 1.0,
        "max_score_diff": None, "latency_ms": None, "images": "-"})
    said = []
    path, row, _ = convert_run(str(run), quantize="dynamic", min_agreement=0.9, max_images=50, echo=said.append)
    assert any("No MediaPipe metadata (labels only): MediaPipe is not installed" in s for s in said)
    assert read_tflite_labels(path) == (run / "labels.txt").read_text().split()
    assert f"{path.name} (MediaPipe)" not in json.loads((run / "exports.json").read_text())


def test_hard_swish_layers_are_counted_inside_nested_models():
    # The int8 note of `kerastl convert` (LiteRT's XNNPACK runs int8 hard-swish outside its
    # delegate): MobileNetV3's hard-swish layers sit inside the nested backbone model.
    import keras

    from kerastl.export.convert import hard_swish_layers

    def mobilenet(minimalistic):
        backbone = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), weights=None, include_top=False,
                                                       minimalistic=minimalistic, include_preprocessing=False)
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(backbone(inputs))))

    assert hard_swish_layers(mobilenet(False)) == 18  # (include_top adds the 19th of the full network)
    assert hard_swish_layers(mobilenet(True)) == 0


def test_the_serving_signature_decodes_every_format_composites_alpha_and_resizes(serving, pngs, keras_model, tmp_path):
    """What the README promises the `serving_default` signature does with the bytes of an
    image file: JPEG, PNG, GIF and BMP decoded, alpha composited on black and the image
    resized inside the graph, as kerastl's own reader (`kerastl predict`) does; a JPEG as
    TensorFlow decodes it, as kerastl's training pipeline does (Pillow's JPEG decoder rounds
    differently: scores 0.01 apart on this model)."""
    import tensorflow as tf
    from PIL import Image

    from kerastl.data.images import read_rgb
    from kerastl.data.pipeline import resize

    path, _ = serving
    _, images = pngs
    rgb = images[0].astype(np.uint8)
    big = Image.fromarray(rgb).resize((64, 48), Image.NEAREST)  # not the model's size: resized
    alpha = np.linspace(0, 255, 32 * 32).reshape(32, 32).astype(np.uint8)
    files = {
        "png": Image.fromarray(rgb), "jpeg": big, "gif": big, "bmp": big,
        "rgba.png": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
    }
    data, expected = [], []
    for name, image in files.items():
        file = tmp_path / f"image.{name}"
        image.save(file)
        data.append(file.read_bytes())
        decoded = tf.io.decode_jpeg(data[-1], channels=3) if name == "jpeg" else read_rgb(str(file))
        expected.append(np.asarray(resize(decoded, 32)))
    composited = np.asarray(read_rgb(str(tmp_path / "image.rgba.png")), np.float64)
    np.testing.assert_allclose(composited, rgb * (alpha[..., None] / 255.0), atol=1.0)  # on black
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    scores = signature(image_bytes=tf.constant(data))["scores"].numpy()
    np.testing.assert_allclose(scores, keras_model.predict(np.stack(expected)), atol=2e-3)
    info = json.loads((path / "assets.extra" / "kerastl.json").read_text())
    assert info["labels"] == keras_model.labels


def test_int8_is_calibrated_on_the_targets_training_images_first_then_the_sources(run):
    from kerastl.export.convert import calibration_images
    from kerastl.export.verify import run_images

    target = run_images(run, 32, split="train", max_images=10**6)
    images, what = calibration_images(run, 32, len(target.images) + 7)
    assert what == f"{target.source} ({len(target.images)}) + syndigits:train (7)"
    np.testing.assert_array_equal(images[:len(target.images)], target.images)
    assert len(images) == len(target.images) + 7


def test_an_onnx_file_under_the_floor_keeps_the_old_one(run, monkeypatch):
    from kerastl.export import verify
    from kerastl.export.convert import convert_run

    compare = verify.compare

    def disagreeing(artifact, reference, data, **kwargs):
        row = compare(artifact, reference, data, **kwargs)
        return dict(row, agreement=0.5) if reference is not None else row

    target = run / "model.onnx"
    old = target.read_bytes() if target.exists() else b"the good model from before"
    target.write_bytes(old)
    monkeypatch.setattr(verify, "compare", disagreeing)
    with pytest.raises(KerastlError, match="under the floor 0.99; nothing was written"):
        convert_run(str(run), fmt="onnx", max_images=50, echo=lambda s: None)
    assert target.read_bytes() == old
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_the_docs_state_each_commands_agreement_floor():
    """The floors the shipping guide gives are the ones the commands use."""
    from pathlib import Path

    from kerastl.export.convert import MIN_AGREEMENT

    export_default = next(p.default for p in main.commands["export"].params if p.name == "min_agreement")
    readme = " ".join((Path(__file__).resolve().parent.parent / "docs" / "shipping.md").read_text().split())
    stated = (f"`kerastl export` {export_default}; `kerastl convert` {MIN_AGREEMENT['none']} for float32, "
              f"float16 and ONNX, {MIN_AGREEMENT['dynamic']} for `dynamic`, {MIN_AGREEMENT['int8']} for `int8`")
    assert stated in readme
    assert MIN_AGREEMENT["float16"] == MIN_AGREEMENT["onnx"] == MIN_AGREEMENT["none"]
