"""kerastl's performance table: what a user waits for, each row against its goal.

Every row runs in a fresh process (TensorFlow fixes its thread pools per process), prints
what it measured, and the table is written to benchmarks/results/performance{,_quick}.{md,json}
with the machine's details. Rows compare things measured side by side in one process
(ratios of medians): this machine is shared and noisy.

    python benchmarks/run_all.py --quick   # about 9 minutes on 2 cores: one seed, fewer steps
    python benchmarks/run_all.py           # the full table: 3 seeds of the default job

Each row's measurement is its own script in benchmarks/perf/ (run one alone to look at it).
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

from common import machine_info

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
ROWS = ROOT / "benchmarks" / "perf"  # one script per row
BASELINE_ACCURACY = 0.939  # the default job's target test accuracy before this work (3 seeds)


def row(name, goal, measured, met, detail=None):
    return {"row": name, "goal": goal, "measured": measured, "met": met, "detail": detail or {}}


def perf_row(name: str, quick: bool, env=None) -> dict:
    cmd = [sys.executable, str(ROWS / f"{name}.py")] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **(env or {})), cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_job(quick: bool) -> dict:
    """`kerastl train` (the README's first command after install), whole process, per seed."""
    seeds = [0] if quick else [0, 1, 2]
    walls, accs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            out = Path(tmp) / f"seed{seed}"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "kerastl", "train", "configs/default.yaml", "--quiet",
                                   "--out", str(out), "--set", f"seed={seed}"], capture_output=True, text=True,
                                  cwd=ROOT)
            walls.append(time.perf_counter() - start)
            if proc.returncode != 0:
                raise RuntimeError(f"default job failed:\n{proc.stderr[-3000:]}")
            accs.append(json.loads((out / "metrics.json").read_text())["target_test"]["accuracy"])
            print(f"  default job seed {seed}: {walls[-1]:.0f} s, target test accuracy {accs[-1]:.4f}", flush=True)
    wall, acc = statistics.median(walls), statistics.mean(accs)
    return row("1. default job (kerastl train, whole process)",
               f"<= 60 s with mean accuracy >= {BASELINE_ACCURACY - 0.01:.3f}",
               f"{wall:.0f} s (median of {len(seeds)}), accuracy {acc:.4f}"
               + (f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else " (1 seed)"),
               wall <= 60 and acc >= BASELINE_ACCURACY - 0.01,
               {"seconds": walls, "accuracy": accs, "seeds": seeds})


def step_rows(quick: bool) -> list:
    rows = []
    results = {}
    for label, env in (("default threads", {"KERASTL_BENCH_INTRA": "0"}),
                       ("intra_op_threads 1", {"KERASTL_BENCH_INTRA": "1"})):
        results[label] = perf_row("step_overhead", quick, env)
    big = perf_row("step_overhead", quick, {"KERASTL_BENCH_SIZE": "224", "KERASTL_BENCH_INTRA": "1"})
    one = results["intra_op_threads 1"]
    default = results["default threads"]
    rows.append(row("2a. step overhead, default model 32 px, batch 64",
                    "kerastl <= 1.10x bare step",
                    f"kerastl {one['kerastl_ms']:.1f} ms vs bare {one['bare_ms']:.1f} ms: {one['overhead']:+.0%}"
                    f" (rounds {one['overhead_range'][0]:+.0%} to {one['overhead_range'][1]:+.0%})",
                    one["overhead"] <= 0.10, one))
    rows.append(row("2b. step overhead, MobileNetV3Small 224 px, batch 32",
                    "kerastl <= 1.10x bare step",
                    f"kerastl {big['kerastl_ms']:.0f} ms vs bare {big['bare_ms']:.0f} ms: {big['overhead']:+.0%}"
                    f" (rounds {big['overhead_range'][0]:+.0%} to {big['overhead_range'][1]:+.0%})",
                    big["overhead"] <= 0.10, big))
    rows.append(row("2c. threads and XLA (default model, bare step)",
                    "use the faster as the default",
                    f"TF default threads {default['bare_ms']:.1f} ms, intra_op_threads 1 {one['bare_ms']:.1f} ms "
                    f"({default['bare_ms'] / one['bare_ms']:.2f}x), XLA {one.get('bare_xla_ms', float('nan')):.1f} ms",
                    one["bare_ms"] <= default["bare_ms"] and one["bare_ms"] <= one.get("bare_xla_ms", float("inf")),
                    {"default_threads": default, "intra_1": one}))
    return rows


def adaptation_row(quick: bool) -> dict:
    r = perf_row("adaptation_cost", quick)
    return row("5. DANN step vs source_only step (digits configs, batch 32+32)", "<= 2.2x",
               f"{r['dann_ms']:.1f} vs {r['source_only_ms']:.1f} ms: {r['ratio']:.2f}x"
               f" (rounds {r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f}x)", r["ratio"] <= 2.2, r)


def hardware_row(quick: bool) -> dict:
    r = perf_row("hardware", quick)
    return row("8. training FLOP rate vs CPU peak (EfficientNetB0 224 px, batch 16)", "report the fraction",
               f"{r['train_gflops']:.1f} of {r['peak_gflops']:.0f} GFLOP/s (2048^2 matmul): {r['fraction']:.0%}",
               None, r)


def tflite_row(quick: bool) -> dict:
    r = perf_row("tflite_224", quick)

    def said(v):
        return (f"latency {v['int8_ms']:.2f} vs {v['float32_ms']:.2f} ms ({v['latency_ratio']:.2f}x), "
                f"size {v['size_ratio']:.2f}x, agreement {v['agreement_int8']:.1%}")

    def met(v):
        return v["latency_ratio"] <= 0.5 and v["size_ratio"] <= 0.3 and v["agreement_int8"] >= 0.99

    std, mini = r["standard"], r["minimalistic"]
    return row("9. TFLite int8 vs float32, MobileNetV3Small 224 px, LiteRT batch 1",
               "latency <= 0.5x, size <= 0.3x, top-1 agreement >= 99%",
               f"standard: {said(std)}; minimalistic (no hard-swish, which XNNPACK does not run in int8): {said(mini)}",
               f"{'yes' if met(std) else 'no'} / {'yes' if met(mini) else 'no'}", r)


def scaling_row(quick: bool) -> dict:
    r = perf_row("scaling", quick)
    images, sizes = r["images"], r["input_size"]
    grow_images = images["16x"]["epoch_s"] / images["1x"]["epoch_s"]
    grow_size = sizes["224"]["step_ms"] / sizes["96"]["step_ms"]
    return row("10. scaling with images and input size", "report how cost grows",
               f"epoch at 16x the images {grow_images:.1f}x the 1x epoch "
               f"({images['1x']['step_ms']:.0f} -> {images['16x']['step_ms']:.0f} ms/step); step at 224 px "
               f"{grow_size:.1f}x the 96 px step for 5.4x the pixels "
               f"({sizes['96']['step_ms']:.0f} / {sizes['160']['step_ms']:.0f} / {sizes['224']['step_ms']:.0f} ms)",
               None, r)


def frozen_row(quick: bool) -> dict:
    r = perf_row("frozen_features", quick)
    c, f = r["cached"], r["frozen_base_in_fit"]
    return row("4. frozen backbone: cached features (MobileNetV3Small 224 px, head-only phase)",
               "epochs after the first >= 20x faster than a frozen base in fit, same accuracy",
               f"{c['later_epoch_s'] * 1000:.0f} ms vs {f['later_epoch_s'] * 1000:.0f} ms per epoch: "
               f"{r['speedup']:.0f}x; test accuracy {c['target_test_accuracy']:.3f} vs {f['target_test_accuracy']:.3f}; "
               f"whole job {c['job_s']:.0f} s vs {f['job_s']:.0f} s",
               r["speedup"] >= 20 and abs(c["target_test_accuracy"] - f["target_test_accuracy"]) <= 0.01, r)


def naive_row(quick: bool) -> dict:
    r = perf_row("naive_fit", quick)
    reached = r["naive_to_kerastl_accuracy_s"]
    epochs = len(r["naive_timeline"])
    return row("7. against the article's naive fit (fine-tuning a source-trained model on 100 target labels)",
               "wall time to the same accuracy",
               f"kerastl {r['kerastl_s']:.0f} s to {r['kerastl_accuracy']:.3f}; naive fit "
               + (f"{reached:.0f} s to reach it" if reached is not None else
                  f"never reached it in {epochs} epochs ({r['naive_process_s']:.0f} s), best {r['naive_best_accuracy']:.3f}"),
               None, r)


def peer_row(quick: bool) -> dict:
    name = "6. against ADAPT's DANN (syndigits -> digits, kerastl's networks, batch, steps)"
    goal = ">= 1.5x faster, at least as accurate"
    r = perf_row("adapt_peer", quick)
    if "missing" in r:
        return row(name, goal, "not measured", None, r)
    p = r["adapt"]
    return row(name, goal,
               f"{r['steps']} steps: kerastl {r['kerastl_s']:.0f} s, accuracy {r['kerastl_accuracy']:.3f}; "
               f"ADAPT {p['wall_s']:.0f} s, accuracy {p['target_test_accuracy']:.3f} (whole processes): "
               f"{r['speedup']:.2f}x",
               r["speedup"] >= 1.5 and r["kerastl_accuracy"] >= p["target_test_accuracy"], r)


def jpeg_row(quick: bool) -> dict:
    r = perf_row("jpeg_pipeline", quick)
    def growth(key):
        return ", ".join(f"{k} +{v['peak_growth_mb']:.0f} MB" for k, v in r.get(key, {}).items())
    return row("3. input pipeline on 640x480 JPEGs at 224 px (decode + resize + augment, uncached)",
               ">= 3x the 224 px step; >= 200 img/s per core; RSS at 1x/4x/16x",
               f"{r['pipeline_img_s']:.0f} img/s ({r['pipeline_img_s_per_core']:.0f} per core) vs the step's "
               f"{r['step_img_s']:.0f} img/s: {r['ratio']:.1f}x; up-front check {r['check_ms_per_file']:.1f} ms/file; "
               f"peak memory growth over 2 epochs ({r['rss']['1x']['images']} images = 1x), in-memory cache: "
               f"{growth('rss')}; streamed (above cache_memory_mb): {growth('rss_streamed') or 'not measured'}",
               r["ratio"] >= 3 and r["pipeline_img_s_per_core"] >= 200, r)


NOT_YET = [
]


def render(rows: list, info: dict, quick: bool, seconds: float) -> str:
    lines = [f"# kerastl performance{' (quick)' if quick else ''}", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, {info['machine']}; Python {info['python']}, "
             f"tensorflow {info['tensorflow']}, keras {info['keras']}; load average at start "
             f"{info['load_average_at_start']:.2f}. Whole table: {seconds / 60:.1f} min. "
             "Generated by `python benchmarks/run_all.py" + (" --quick" if quick else "") + "`.", "",
             "| row | goal | measured | met |", "|---|---|---|---|"]
    for r in rows:
        met = r["met"] if isinstance(r["met"], str) else {True: "yes", False: "**no**", None: "-"}[r["met"]]
        if r["measured"] == "not measured":
            met = "not measured"
        lines.append(f"| {r['row']} | {r['goal']} | {r['measured']} | {met} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed and fewer steps (about 9 minutes)")
    parser.add_argument("--only", nargs="*", help="row functions to run: default_job step adaptation hardware tflite scaling frozen naive peer jpeg")
    args = parser.parse_args()
    info = machine_info()
    started = time.perf_counter()
    runners = {"default_job": lambda: [default_job(args.quick)], "step": lambda: step_rows(args.quick),
               "adaptation": lambda: [adaptation_row(args.quick)], "hardware": lambda: [hardware_row(args.quick)],
               "tflite": lambda: [tflite_row(args.quick)], "scaling": lambda: [scaling_row(args.quick)],
               "frozen": lambda: [frozen_row(args.quick)], "naive": lambda: [naive_row(args.quick)],
               "peer": lambda: [peer_row(args.quick)], "jpeg": lambda: [jpeg_row(args.quick)]}
    rows = []
    for name, run in runners.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        row_start = time.perf_counter()
        for r in run():
            r["seconds"] = time.perf_counter() - row_start  # of the whole group
            rows.append(r)
            print(f"  {r['row']}: {r['measured']}  (goal {r['goal']}; met: {r['met']})", flush=True)
    rows += [row(name, goal, "not measured", None) for name, goal in NOT_YET]
    rows.sort(key=lambda r: int("".join(c for c in r["row"].split(".")[0] if c.isdigit())))
    seconds = time.perf_counter() - started
    text = render(rows, info, args.quick, seconds)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "performance_quick" if args.quick else "performance"
    if args.only:
        name += "_only_" + "_".join(args.only)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": info, "seconds": seconds, "rows": rows},
                                                     indent=2) + "\n")


if __name__ == "__main__":
    main()
