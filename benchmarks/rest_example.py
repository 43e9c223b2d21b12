"""The shipping guide's TF Serving REST example: request and response for one digit, from a run.

Exports RUN (the default config's run) to a SavedModel, builds the REST request body for
scikit-learn's handwritten digit 1794 (an 8) as an 8x8 greyscale PNG, and applies TF
Serving's REST rules to the loaded signature (`kerastl.export.serving.rest_predict`).
Writes benchmarks/results/rest_example.json.

    python benchmarks/rest_example.py saved_models/default-<timestamp>
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    import tensorflow as tf
    from PIL import Image
    from sklearn.datasets import load_digits

    from kerastl.export.serving import export_serving, rest_predict, rest_request

    run = sys.argv[1]
    path, _ = export_serving(run)
    buf = io.BytesIO()
    Image.fromarray(np.round(load_digits().images[1794] / 16 * 255).astype(np.uint8)).save(buf, format="PNG")
    request = rest_request([buf.getvalue()])
    response = rest_predict(tf.saved_model.load(str(path)).signatures["serving_default"], request)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rest_example.json").write_text(json.dumps(
        {"run": Path(run).name, "saved_model": str(path.relative_to(Path(run).parent)),
         "request": request, "response": response}, indent=2) + "\n")
    print(json.dumps(request))
    print(json.dumps(response))


if __name__ == "__main__":
    main()
