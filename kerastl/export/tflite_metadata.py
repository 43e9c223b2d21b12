"""TFLite model metadata for on-device apps, and the check in the runtime those apps use.

MediaPipe Tasks' `ImageClassifier` (Android, iOS, web, Python) and the TFLite Task Library
read a model's metadata: the input's normalization, the label file, a name and a
description. `kerastl convert` writes it with the metadata writer of the `mediapipe`
package (the optional extra `pip install "kerastl[mobile]"`), then runs the converted file
through `ImageClassifier` on the run's test images and compares its top-1 with model.keras.

Every kerastl model takes RGB pixels in [0, 255] and preprocesses inside (the backbone
family's `preprocess_input` is a layer of the model, see `models/backbones.py`), so the
normalization an app must apply is the identity: mean 0, std 1. Integer-input int8 files
(`--io-type uint8`) take the pixels as they are.

Without the extra, the .tflite carries only the labels (the zip layout the metadata uses for
associated files), and the MediaPipe check is skipped with that reason.
"""

from __future__ import annotations

import sys
import time
import types

import numpy as np

MOBILE_EXTRA = 'pip install "kerastl[mobile]"'
_VERSION_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def unavailable() -> str | None:
    """None when the metadata writer and ImageClassifier can be used, else why not."""
    try:
        _writer_module()
        from mediapipe.tasks.python import vision  # noqa: F401
    except ImportError as err:
        return f"MediaPipe is not installed ({err}); {MOBILE_EXTRA}"
    return None


def with_metadata(flatbuffer: bytes, labels: list[str], name: str, description: str) -> bytes:
    """The .tflite flatbuffer with image-classifier metadata and labels.txt packed in."""
    writer_module = _writer_module()
    writer = writer_module.MetadataWriter.create(bytearray(flatbuffer))
    writer.add_general_info(name, description)
    writer.add_image_input(norm_mean=[0.0], norm_std=[1.0])
    writer.add_classification_output(writer_module.Labels().add(list(labels)))
    blob, _ = writer.populate()
    del writer  # its temporary folder goes now, not at interpreter exit
    return bytes(blob)


def classify(blob: bytes, images: np.ndarray) -> tuple[np.ndarray, float]:
    """(top-1 class index per image, ms per image) from MediaPipe's ImageClassifier task."""
    import mediapipe as mp
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    options = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_buffer=blob), max_results=1)
    pixels = np.clip(np.round(images), 0, 255).astype(np.uint8)
    top = np.empty(len(pixels), dtype=np.int64)
    from kerastl.native_logs import native_stderr_silenced

    with native_stderr_silenced():  # its TFLite runtime announces the XNNPACK delegate
        classifier = vision.ImageClassifier.create_from_options(options)
    with classifier:
        start = time.perf_counter()
        for i, image in enumerate(pixels):
            result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                  data=np.ascontiguousarray(image)))
            top[i] = result.classifications[0].categories[0].index
        ms = (time.perf_counter() - start) * 1000 / max(len(pixels), 1)
    return top, ms


def _writer_module():
    _install_parser_version_standin()
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    return metadata_writer


def _install_parser_version_standin() -> None:
    """WORKAROUND for the mediapipe wheels on PyPI (checked: 0.10.35 and 1.2.3, Linux x86_64):
    `mediapipe/tasks/python/metadata/metadata.py` imports the compiled module
    `mediapipe.tasks.cc.metadata.python._pywrap_metadata_version`, which the wheels do not
    ship (ModuleNotFoundError: No module named 'mediapipe.tasks.cc'), so no metadata writer
    imports. The writer calls one function of it, GetMinimumMetadataParserVersion; this puts
    `minimum_parser_version` (the same rule in Python) in its place when the real module is
    missing. Remove once a wheel ships the extension."""
    if _VERSION_MODULE in sys.modules:
        return
    try:
        __import__(_VERSION_MODULE)
        return
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith("mediapipe.tasks.cc"):
            raise  # mediapipe itself is missing: the caller reports it
    parents = ["mediapipe.tasks.cc", "mediapipe.tasks.cc.metadata", "mediapipe.tasks.cc.metadata.python"]
    for parent in parents:
        sys.modules.setdefault(parent, types.ModuleType(parent))
    standin = types.ModuleType(_VERSION_MODULE)
    standin.GetMinimumMetadataParserVersion = minimum_parser_version
    sys.modules[_VERSION_MODULE] = standin


def minimum_parser_version(buffer: bytes) -> str:
    """The oldest metadata parser that understands every field of a ModelMetadata buffer:
    1.0.0 plus the version each later schema member was added in (the table of
    mediapipe/tasks/cc/metadata/metadata_version.cc)."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    meta = fb.ModelMetadataT.InitFromObj(fb.ModelMetadata.GetRootAsModelMetadata(bytes(buffer), 0))
    unit_versions = {fb.ProcessUnitOptions.BertTokenizerOptions: (1, 1, 0),
                     fb.ProcessUnitOptions.SentencePieceTokenizerOptions: (1, 1, 0),
                     fb.ProcessUnitOptions.RegexTokenizerOptions: (1, 2, 1)}
    needed = [(1, 0, 0)]

    def files(items):
        for f in items or []:
            if f.type == fb.AssociatedFileType.VOCABULARY:
                needed.append((1, 0, 1))
            if f.type == fb.AssociatedFileType.SCANN_INDEX_FILE:
                needed.append((1, 4, 0))
            if f.version is not None:
                needed.append((1, 4, 1))

    def units(items):
        needed.extend(unit_versions.get(u.optionsType, (1, 0, 0)) for u in items or [])

    def tensors(items):
        for t in items or []:
            files(t.associatedFiles)
            units(t.processUnits)
            if t.content is not None and t.content.contentPropertiesType == fb.ContentProperties.AudioProperties:
                needed.append((1, 3, 0))

    for graph in meta.subgraphMetadata or []:
        tensors(graph.inputTensorMetadata)
        tensors(graph.outputTensorMetadata)
        files(graph.associatedFiles)
        for member, version in (("inputProcessUnits", (1, 1, 0)), ("outputProcessUnits", (1, 1, 0)),
                                ("inputTensorGroups", (1, 2, 0)), ("outputTensorGroups", (1, 2, 0)),
                                ("customMetadata", (1, 5, 0))):
            if getattr(graph, member) is not None:
                needed.append(version)
        units(graph.inputProcessUnits)
        units(graph.outputProcessUnits)
    files(meta.associatedFiles)
    return ".".join(map(str, max(needed)))
