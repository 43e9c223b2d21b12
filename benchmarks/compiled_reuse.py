"""Does fine-tuning's reuse of the traced train step pay for its machinery?

Fine-tuning keeps a phase's compiled model for the next phase when both train the same
variables with the same kind of optimizer (`kerastl/training/finetune.py`), resetting the
optimizers and the learning-rate schedule (`WarmupCosine`, whose numbers are variables)
instead of compiling and tracing again. This runs the default job in fresh processes with
the reuse on and off (off: every phase compiles anew), in alternating order, and compares
whole-process wall and CPU time and the final weights.

    python benchmarks/compiled_reuse.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from common import PINNED_FINETUNE, machine, write_results


def child(reuse: bool) -> dict:
    start = time.perf_counter()
    from kerastl.config import load_config
    from kerastl.training import finetune
    from kerastl.training.job import train

    if not reuse:
        class NoReuse(finetune._Compiled):  # a key no later phase matches: compiled anew
            def __init__(self, key, *args, **kwargs):
                super().__init__(object(), *args, **kwargs)

        finetune._Compiled = NoReuse
    with tempfile.TemporaryDirectory() as tmp:
        result = train(load_config(None, PINNED_FINETUNE), out=tmp + "/run", quiet=True, echo=lambda s: None)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "weights_sha256": result.metrics["distribute"]["weights_sha256"],
            "target_test_accuracy": result.metrics["target_test"]["accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child == "on")), flush=True)
        return
    runs = {"on": [], "off": []}
    for r in range(args.rounds):
        for kind in (("on", "off") if r % 2 == 0 else ("off", "on")):
            proc = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True, check=True)
            runs[kind].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(kind, runs[kind][-1], flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "cpu_s")} for k, v in runs.items()}
    same = len({r["weights_sha256"] for v in runs.values() for r in v}) == 1
    lines = ["# Fine-tuning's reuse of the traced step (the default job)", "",
             f"Whole `train` processes of configs/default.yaml (fine-tuning pinned to 80 epochs), {args.rounds} rounds in alternating order; {machine()}.",
             "`python benchmarks/compiled_reuse.py`.", "",
             "| reuse | wall s (median) | CPU s (median) | runs (wall s) |", "|---|---|---|---|"]
    for kind in ("on", "off"):
        lines.append(f"| {kind} | {med[kind]['wall_s']:.1f} | {med[kind]['cpu_s']:.1f} | "
                     + ", ".join(f"{r['wall_s']:.1f}" for r in runs[kind]) + " |")
    lines += ["", f"Reuse on / off: wall {med['on']['wall_s'] / med['off']['wall_s']:.2f}x, CPU "
                  f"{med['on']['cpu_s'] / med['off']['cpu_s']:.2f}x. Final weights identical in every run: "
                  f"{'yes' if same else 'no'}."]
    write_results("compiled_reuse", lines, {"rounds": args.rounds, "runs": runs})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
