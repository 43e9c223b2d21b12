"""kerastl's DANN (configs/digits_dann.yaml as shipped) against ADAPT's DANN (the `adapt`
package: pip install .[bench]) with kerastl's networks for that config (encoder =
backbone + bottleneck, head, discriminator), its optimizer (SGD, Nesterov momentum,
weight decay, annealed lr), lambda ramp, batch (32 + 32) and number of steps, on
syndigits -> digits: whole-process wall time and target test accuracy. ADAPT reads
in-memory arrays without augmentation (kerastl's config augments the source) and
passes source and target through BN separately (kerastl: jointly).

    python benchmarks/perf/adapt_peer.py [--quick]
"""

from __future__ import annotations

import json
import os
import sys
import time



def adapt_peer(quick: bool) -> dict:
    """kerastl's DANN (configs/digits_dann.yaml as shipped) against ADAPT's DANN (the `adapt`
    package: pip install .[bench]) with kerastl's networks for that config (encoder =
    backbone + bottleneck, head, discriminator), its optimizer (SGD, Nesterov momentum,
    weight decay, annealed lr), lambda ramp, batch (32 + 32) and number of steps, on
    syndigits -> digits: whole-process wall time and target test accuracy. ADAPT reads
    in-memory arrays without augmentation (kerastl's config augments the source) and
    passes source and target through BN separately (kerastl: jointly)."""
    import subprocess
    import tempfile

    try:
        import adapt  # noqa: F401
    except ImportError:
        return {"missing": "the adapt package (pip install '.[bench]')"}
    steps = 150 if quick else 3000
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "kerastl", "train", "configs/digits_dann.yaml", "--quiet", "--out", tmp + "/k",
                        "--set", f"adapt.steps={steps}", "--set", "train.report=false"], check=True, cwd=root,
                       capture_output=True)
        kerastl_s = time.perf_counter() - start
        with open(tmp + "/k/metrics.json") as f:
            kerastl_accuracy = json.load(f)["target_test"]["accuracy"]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "adapt_dann_child.py"), str(steps)], check=True, cwd=root, capture_output=True,
                          text=True)
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    peer["wall_s"] = time.perf_counter() - start
    return {"steps": steps, "kerastl_s": kerastl_s, "kerastl_accuracy": kerastl_accuracy, "adapt": peer,
            "speedup": peer["wall_s"] / kerastl_s}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and images, one repeat")
    print(json.dumps(adapt_peer(parser.parse_args().quick)), flush=True)
