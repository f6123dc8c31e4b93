"""How long ``load_dataset`` of the CIFAR-10 image folder takes: decoding (cold) against the cache (warm).

    python benchmarks/data_cache.py [--data ../shared/data/cifar10] [--repeats 5]

The cold load decodes every JPEG into a fresh, private cache folder (so the user's cache is not
touched); each warm load is a new process, as a user's next command is, and is timed inside it
from the call to ``load_dataset`` to its return (interpreter start-up and ``import spikec`` are
reported separately).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from spikec.data import load_dataset
t1 = time.perf_counter()
train, test, info = load_dataset(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "train": len(train), "test": len(test)}))
"""


def timed_load(data: str, cache: str) -> dict:
    env = {**os.environ, "SPIKEC_DATA_CACHE": cache}
    out = subprocess.run([sys.executable, "-c", CHILD, data], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10")))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--busy", type=int, default=0, help="also time the warm loads beside N busy-looping processes")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_load(args.data, cache)
        warm = [timed_load(args.data, cache) for _ in range(args.repeats)]
        busy = []
        if args.busy:
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
            try:
                busy = [timed_load(args.data, cache) for _ in range(args.repeats)]
            finally:
                for b in burners:
                    b.kill()
        size = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache))
    loads = [w["load"] for w in warm]
    result = {"cold_seconds": cold["load"], "warm_seconds_median": statistics.median(loads), "warm_seconds": loads,
              "import_seconds_median": statistics.median(w["import"] for w in warm), "cache_bytes": size,
              "samples": cold["train"] + cold["test"]}
    if busy:
        result["busy_processes"] = args.busy
        result["busy_warm_seconds_median"] = statistics.median(b["load"] for b in busy)
        result["busy_import_seconds_median"] = statistics.median(b["import"] for b in busy)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
