"""The fine-tuning choices of configs/default.yaml against the alternatives they replaced.

Runs the default job and variants of it (each a set of `--set` overrides) for the given
seeds and writes target test accuracies to benchmarks/results/recipe_choices.{json,md}:

- default: BN keeps learning while fine-tuning (`model.bn: train`), all layers at one lr;
- classic: the head-first recipe: 5 head-only epochs, frozen BN, backbone lr x 0.1;
- keras_bn_momentum: the backbone's own BN momentum (0.999) instead of 0.9 (the BN
  statistics are then re-estimated after fine-tuning: `train.precise_bn: auto`);
- keras_bn_momentum_no_precise_bn: the same without that re-estimation.

    python benchmarks/recipe_choices.py [--seeds 0] [--variants default classic ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PINNED_FINETUNE, machine, write_results

VARIANTS = {
    "default": [],
    "classic": ["model.bn=frozen", "train.finetune.head_epochs=5", "train.finetune.backbone_lr_mult=0.1"],
    "keras_bn_momentum": ["model.bn_momentum=null"],
    "keras_bn_momentum_no_precise_bn": ["model.bn_momentum=null", "train.precise_bn=never"],
}


def run(variant: str, seed: int, workdir: Path) -> dict:
    out = workdir / f"{variant}-{seed}"
    cmd = [sys.executable, "-m", "kerastl", "train", "--quiet", "--out", str(out), "--set", f"seed={seed}"]
    for override in PINNED_FINETUNE + VARIANTS[variant]:
        cmd += ["--set", override]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"variant": variant, "seed": seed, "seconds": round(time.time() - start, 1),
            "target_test_accuracy": metrics["target_test"]["accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            for seed in args.seeds:
                rows.append(run(variant, seed, Path(tmp)))
                print(rows[-1], flush=True)
    lines = ["# Fine-tuning choices of configs/default.yaml", "",
             f"Target test accuracy (configs/default.yaml with its fine-tuning pinned to 80 epochs and geometric "
             f"augmentation, and the overrides shown), seeds {args.seeds}; {machine()}.", "",
             "| variant | overrides | mean | per seed |", "|---|---|---|---|"]
    for variant in args.variants:
        accs = [r["target_test_accuracy"] for r in rows if r["variant"] == variant]
        lines.append(f"| {variant} | {' '.join(VARIANTS[variant]) or '-'} | {statistics.mean(accs):.3f} | "
                     f"{', '.join(f'{a:.3f}' for a in accs)} |")
    write_results("recipe_choices", lines, {"seeds": args.seeds, "variants": VARIANTS, "runs": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
