"""Feature pipeline throughput on the full shared J-Quants dataset (926 k rows).

Prints one JSON object: ``rows``, ``seconds`` (median wall time of ``build_features``
over the repeats, data already in memory, Numba kernels already compiled),
``peak_mb`` (peak resident memory of the process, loading included), and details:
load time, CPU time, the memory the pipeline adds on top of the loaded quotes, JIT
warm-up time and every repeat.

    .venv/bin/python benchmarks/features.py [--repeats 3] [--data-dir PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

# `python benchmarks/features.py` puts benchmarks/ first on sys.path, where
# benchmarks/inference.py would shadow the `inference` package: drop that entry.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]


class PeakRss:
    """Samples this process's RSS every few milliseconds to find a section's peak."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def main() -> int:
    import polars as pl

    from inference.data import load_daily_quotes, load_listed_info
    from inference.features import FEATURE_COLUMNS, build_features
    from infra.settings import get_settings

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    folder = (args.data_dir or get_settings().data_dir) / "jquants"
    if not (folder / "daily_quotes.csv.gz").is_file():
        print(json.dumps({"error": f"{folder}/daily_quotes.csv.gz is absent"}))
        return 2

    start = time.perf_counter()
    quotes = load_daily_quotes(folder)
    listed = load_listed_info(folder)
    load_s = time.perf_counter() - start

    start = time.perf_counter()
    build_features(
        quotes.filter(pl.col("Code").is_in(quotes["Code"].unique().head(3).implode())), listed
    )
    warmup_s = time.perf_counter() - start

    process = psutil.Process()
    walls: list[float] = []
    cpus: list[float] = []
    extra_mb: list[float] = []
    rows = 0
    for _ in range(args.repeats):
        # Timed without the RSS sampler: its thread would compete for the GIL.
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        features = build_features(quotes, listed)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
        rows = features.height
        del features
    # One more run, sampled, for the memory the pipeline adds on top of the loaded quotes.
    before = process.memory_info().rss
    with PeakRss() as rss:
        features = build_features(quotes, listed)
    extra_mb.append((rss.peak - before) / 2**20)
    del features

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "rows": rows,
        "seconds": round(statistics.median(walls), 3),
        "peak_mb": round(peak_kb / 1024, 1),
        "features": len(FEATURE_COLUMNS),
        "best_seconds": round(min(walls), 3),
        "cpu_seconds": round(statistics.median(cpus), 3),
        "pipeline_extra_mb": round(max(extra_mb), 1),
        "load_seconds": round(load_s, 3),
        "jit_warmup_seconds": round(warmup_s, 3),
        "repeats_seconds": [round(w, 3) for w in walls],
        "cpu_count": psutil.cpu_count(),
        "load_average_1m": round(psutil.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
