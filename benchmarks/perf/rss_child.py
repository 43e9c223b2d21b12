"""Memory growth of kerastl's input pipeline over 2 epochs, in its own process (jpeg_pipeline.py):
    python benchmarks/perf/rss_child.py LISTING_JSON TIMES memory|stream
"""
import json, sys

def rss_mb(key="VmRSS"):  # VmHWM: the peak
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

import numpy as np
import tensorflow as tf
from kerastl.data.pipeline import build_dataset
from kerastl.data.splits import Split
listing = json.load(open(sys.argv[1]))
paths = listing["paths"] * int(sys.argv[2])
extra = {"in_graph": np.array(listing["in_graph"] * int(sys.argv[2]))} if "in_graph" in Split.__dataclass_fields__ else {}
split = Split(labels=np.arange(len(paths)) % 2, paths=paths, **extra)  # (older kerastl: no in_graph)
tf.constant(0)  # TensorFlow started before the baseline
base = rss_mb()
cache = sys.argv[3] == "memory"  # the default under cache_memory_mb; else decoded every epoch
for _ in build_dataset(split, 224, 32, 2, training=True, epochs=2, cache=cache):
    pass
print(json.dumps({"images": len(paths), "rss_growth_mb": rss_mb() - base, "peak_growth_mb": rss_mb("VmHWM") - base,
                  "cache_mb": len(paths) * 224 * 224 * 3 / 2**20}))
