"""The article's fine-tuning recipe (../shared/seed: a pretrained network with a new last
layer, Adam 1e-3 on everything, the image folder decoded every epoch, batch 32, no cache
or prefetch) in Keras, against `kerastl train` fine-tuning the same source-trained model
on the same 100 labelled target images (the default job's fine-tuning recipe). Both start
from one model trained by kerastl on the rendered digits only (the default job's
pretraining recipe). Whole processes; the naive run's test accuracy after every epoch
(not counted in its time) gives its time to kerastl's accuracy, if it gets there.

    python benchmarks/perf/naive_fit.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time

from common import default_config


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
    root = os.path.join(os.path.dirname(__file__), "..", "..")
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

        cfg = default_config()
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
        proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "naive_fit_child.py"), folder, os.path.join(tmp, "test.npz"), source_run,
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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(naive_fit(parser.parse_args().quick)), flush=True)
