"""Source-free adaptation (`kerastl adapt RUN --target digits`) from finished runs.

Trains configs/digits_<method>.yaml (syndigits -> digits, 9,000 steps) for each method and
seed, then adapts each finished run to the digits' training images with `kerastl adapt`
(no source image read), and writes each run's target test accuracy as trained, after
adaptation (the epoch kept by the label-free score) and at its best epoch (which only the
labels know), to benchmarks/results/<name>.{md,json}.

    python benchmarks/source_free.py [--methods source_only dann] [--seeds 0 1 2]
        [--workdir DIR] [--epochs 10] [--beta B] [--lr LR] [--selection S] [--name source_free]
        [--merge NAME ...]

A method may carry an add-on of benchmarks/adaptation.py (`source_only+ls`: the source model
trained with label smoothing, as SHOT's). With `--workdir`, finished runs there are reused (a
run is trained once for several adaptation settings); with `--merge`, the runs of earlier
results files are kept and only the rest adapted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adaptation import config_path, split_add_on
from common import RESULTS, machine, write_results

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def trained(method: str, seed: int, workdir: Path) -> Path:
    """The finished run of `method` (a name of benchmarks/adaptation.py: "source_only+ls" is
    the source-only config with label smoothing) for `seed`, trained here if not there yet."""
    run = workdir / f"{method}-{seed}"
    if not (run / "metrics.json").exists():
        overrides = [part for o in split_add_on(method)[1] for part in ("--set", o)]
        subprocess.run([sys.executable, "-m", "kerastl", "train", str(config_path(method)), "--quiet", "--out",
                        str(run), "--set", f"seed={seed}", "--set", "train.report=false", *overrides],
                       check=True, stdout=subprocess.DEVNULL, env=ENV)
    return run


def adapted(run: Path, epochs: int, extra: list[str]) -> dict:
    out = run.parent / f"{run.name}-shot-{epochs}{'-' + '-'.join(extra).strip('-') if extra else ''}"
    shutil.rmtree(out, ignore_errors=True)  # an earlier adaptation of the run: measured again
    start = time.time()
    subprocess.run([sys.executable, "-m", "kerastl", "adapt", str(run), "--target", "digits", "--quiet",
                    "--epochs", str(epochs), "--out", str(out), *extra],
                   check=True, stdout=subprocess.DEVNULL, env=ENV)
    metrics = json.loads((out / "metrics.json").read_text())
    epochs_rows = metrics["adaptation"]["epochs"]
    return {"seconds": round(time.time() - start, 1), "as_trained": epochs_rows[0]["target_test_accuracy"],
            "adapted": metrics["target_test"]["accuracy"], "kept_epoch": metrics["adaptation"]["selection"]["epoch"],
            "per_epoch": [r["target_test_accuracy"] for r in epochs_rows],
            "best_epoch_accuracy": max(r["target_test_accuracy"] for r in epochs_rows)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["source_only", "dann"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workdir", type=Path, help="where the trained runs are kept (default: a temporary folder)")
    for option in ("--beta", "--lr", "--selection"):
        parser.add_argument(option, help=f"`kerastl adapt {option}` (default: its own)")
    parser.add_argument("--name", default="source_free")
    parser.add_argument("--merge", nargs="*", default=[], metavar="NAME",
                        help="results files of earlier runs of this script (same settings) whose runs are kept, "
                             "not run again")
    args = parser.parse_args()
    args.extra = [part for option in ("beta", "lr", "selection") if getattr(args, option) is not None
                  for part in (f"--{option}", str(getattr(args, option)))]
    rows = []
    for name in args.merge:
        data = json.loads((RESULTS / f"{name}.json").read_text())
        if data["settings"] != {"epochs": args.epochs, "extra": args.extra}:
            sys.exit(f"--merge: {name} was adapted with {data['settings']}, not {args.epochs} epochs and {args.extra}")
        rows += [r for r in data["runs"] if r["method"] in args.methods and r["seed"] in args.seeds]
    done = {(r["method"], r["seed"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            for method in args.methods:
                if (method, seed) in done:
                    continue
                row = {"method": method, "seed": seed, **adapted(trained(method, seed, workdir), args.epochs, args.extra)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                write(rows, args)  # after every run: an interrupted benchmark keeps what it measured
    write(rows, args)


def write(rows: list, args) -> None:
    rows = sorted(rows, key=lambda r: (r["seed"], args.methods.index(r["method"])))
    methods = [m for m in args.methods if any(r["method"] == m for r in rows)]
    lines = ["# Source-free adaptation of finished runs (kerastl adapt)", "",
             f"syndigits -> digits runs of configs/digits_<method>.yaml (9,000 steps), then `kerastl adapt RUN "
             f"--target digits --epochs {args.epochs}{' ' + ' '.join(args.extra) if args.extra else ''}` (SHOT; "
             f"no source image read; the epoch kept by the label-free score, the run as trained a candidate); "
             f"{machine()}. Target test accuracy.",
             *[f"`{m}`: configs/digits_{split_add_on(m)[0]}.yaml with {', '.join(split_add_on(m)[1])}."
               for m in methods if split_add_on(m)[1]], "",
             "| method | seed | as trained | adapted (kept epoch) | change | best epoch (labels) | seconds |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['seed']} | {r['as_trained']:.3f} | {r['adapted']:.3f} ({r['kept_epoch']}) | "
                     f"{(r['adapted'] - r['as_trained']) * 100:+.1f} | {r['best_epoch_accuracy']:.3f} | {r['seconds']:.0f} |")
    lines += ["", "| method | seeds | as trained, mean | adapted, mean | mean change | worst change |", "|---|---|---|---|---|---|"]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        change = [r["adapted"] - r["as_trained"] for r in mine]
        lines.append(f"| {method} | {len(mine)} | {statistics.mean(r['as_trained'] for r in mine):.3f} | "
                     f"{statistics.mean(r['adapted'] for r in mine):.3f} | {statistics.mean(change) * 100:+.1f} | "
                     f"{min(change) * 100:+.1f} |")
    write_results(args.name, lines, {"settings": {"epochs": args.epochs, "extra": args.extra}, "runs": rows})

if __name__ == "__main__":
    main()
