"""Import-time benchmark: ``import superduperdb`` in a fresh interpreter, against baselines.

``import superduperdb`` must stay cheap (a notebook imports it before it does anything, and every
Dask worker process imports it): the heavy libraries (torch, dask, pymongo, pynndescent...) load
only when first used, which ``tests/unit/test_config.py::test_import_is_lazy`` checks. This script
measures how long the import takes, in fresh interpreters, alternating with two baselines measured
in the same run (the machines are shared and noisy: compare ratios):

* ``python -c pass``: the interpreter alone;
* ``python -c "import json, logging"``: a small standard-library import, about what a lazy
  package costs.

The wall time of each process is measured from outside (``subprocess.run``), best and median of
``--repeats`` rounds, and written to ``bench/results/import_time.json``.

Examples
--------
    python bench/import_time.py               # 15 rounds
    python bench/import_time.py --repeats 40
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _util import environment, ratio, write_result

PROGRAMS = {
    "interpreter": "pass",
    "stdlib": "import json, logging",
    "superduperdb": "import superduperdb",
}


def wall(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    for _ in range(args.repeats):  # interleaved, so load spikes hit every program alike
        for name, code in PROGRAMS.items():
            walls[name].append(wall(code))
    result = {"repeats": args.repeats, "environment": environment(), "seconds": {}}
    for name, values in walls.items():
        result["seconds"][name] = {"best": min(values), "median": statistics.median(values)}
    best = {name: result["seconds"][name]["best"] for name in PROGRAMS}
    result["ratios"] = {
        "superduperdb / interpreter (best)": ratio(best["superduperdb"], best["interpreter"]),
        "superduperdb / stdlib (best)": ratio(best["superduperdb"], best["stdlib"]),
        "import cost above the interpreter, s (best)": best["superduperdb"] - best["interpreter"],
    }
    path = write_result("import_time", result)
    print(f"{path}: {result['ratios']}")


if __name__ == "__main__":
    main()
