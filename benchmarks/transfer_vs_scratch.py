"""Pretrain-then-fine-tune against the same network trained from scratch.

Runs the default config (pretrain on syndigits, fine-tune on 10 labels per class of
digits) and the same config with `source=null` (no pretraining, the same fine-tuning
schedule on the same 100 target labels), for several seeds, and writes the target test
accuracies to benchmarks/results/transfer_vs_scratch.{json,md}.

    python benchmarks/transfer_vs_scratch.py [--seeds 0 1 2]
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

from common import machine, write_results


def run(seed: int, scratch: bool, workdir: Path) -> dict:
    out = workdir / f"{'scratch' if scratch else 'transfer'}-{seed}"
    cmd = [sys.executable, "-m", "kerastl", "train", "--quiet", "--out", str(out),
           "--set", f"seed={seed}"]
    if scratch:
        cmd += ["--set", "source=null"]
    start = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seed": seed, "scratch": scratch, "seconds": round(time.time() - start, 1),
            "target_test_accuracy": metrics["target_test"]["accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for scratch in (False, True):
                rows.append(run(seed, scratch, Path(tmp)))
                print(rows[-1], flush=True)
    summary = {}
    for name, scratch in (("pretrain + fine-tune", False), ("from scratch", True)):
        accs = [r["target_test_accuracy"] for r in rows if r["scratch"] == scratch]
        summary[name] = {"mean": statistics.mean(accs),
                         "stdev": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                         "runs": accs}
    lines = [
        "# Target test accuracy: pretrain on syndigits + fine-tune vs. from scratch",
        "",
        f"configs/default.yaml, 10 target labels per class, seeds {args.seeds}; {machine()}.",
        "",
        "| run | mean | stdev | per seed | seconds per run |",
        "|---|---|---|---|---|",
    ]
    for name, scratch in (("pretrain + fine-tune", False), ("from scratch", True)):
        s = summary[name]
        secs = statistics.mean(r["seconds"] for r in rows if r["scratch"] == scratch)
        lines.append(f"| {name} | {s['mean']:.3f} | {s['stdev']:.3f} | "
                     + ", ".join(f"{a:.3f}" for a in s["runs"]) + f" | {secs:.0f} |")
    write_results("transfer_vs_scratch", lines, {"rows": rows, "summary": summary})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
