"""Every export format of one run: file size, top-1 agreement with Keras, accuracy, latency.

Trains the default config (or uses --run), then runs `kerastl export` and `kerastl convert`
for every quantization mode and ONNX, each checked on the run's target test split, and
writes benchmarks/results/<name>.{md,json}. With the `mobile` extra every .tflite file is
also run by MediaPipe's ImageClassifier task (format `mediapipe`). Latency: median of 50
single-image calls at batch 1 (Keras: a tf.function around the model; TFLite: LiteRT with
XNNPACK; ONNX: onnxruntime CPU; SavedModel: the uint8 signature); MediaPipe: mean over the
check images of `ImageClassifier.classify` (its own resizing and tensor conversion included).

    python benchmarks/export_formats.py [--run saved_models/RUN] [--name export_formats]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODES = [("tflite", "none", "float32"), ("tflite", "dynamic", "float32"), ("tflite", "float16", "float32"),
         ("tflite", "int8", "float32"), ("tflite", "int8", "uint8"), ("onnx", "none", "float32")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished run directory (default: train the default config)")
    parser.add_argument("--name", default="export_formats", help="results file name in benchmarks/results/")
    args = parser.parse_args()
    from kerastl.export.convert import convert_run
    from kerastl.export.serving import export_serving
    from kerastl.export.verify import format_rows, read_rows

    run = args.run
    if run is None:
        from kerastl.config import load_config
        from kerastl.training.job import train

        run = str(train(load_config(None), out=None, quiet=True, echo=print).run_dir)
    rows = []
    _, row = export_serving(run)
    rows.append(row)
    for fmt, quantize, io_type in MODES:
        path, row, keras_row = convert_run(run, fmt=fmt, quantize=quantize, io_type=io_type, min_agreement=0.0)
        rows.append(row)
        in_mediapipe = read_rows(run).get(f"{path.name} (MediaPipe)")
        if in_mediapipe:
            rows.append(in_mediapipe)
    rows.insert(0, keras_row)
    table = format_rows(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    config = (Path(run) / "config.yaml").read_text().splitlines()
    name = next((line.split(":", 1)[1].strip() for line in config if line.startswith("name:")), "?")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": machine, "run": run, "rows": rows},
                                                          indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(
        f"# Export formats of one run (config name: {name})\n\n"
        f"Run {Path(run).name}; checked on {rows[0]['images']}; {machine}.\n"
        "Latency: median of 50 calls at batch 1 (MediaPipe: mean of its classify calls).\n\n```\n"
        + table + "\n```\n")
    print(table)


if __name__ == "__main__":
    main()
