"""How long a simple ``tradecore`` call takes, start to finish (issue 10, item 11).

Opens an account on a temporary store, then runs ``tradecore account show alice``
``--runs`` times (after one warm-up run that writes bytecode and the universe cache) and
prints JSON: wall seconds min/median/max, and the ten modules with the largest
cumulative import time of one run (``python -X importtime``). ``--code DIR`` measures
another checkout (e.g. an older commit exported with ``git archive``).

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --code /tmp/before --runs 15
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
from typing import Any

_HERE = Path(__file__).resolve().parent
STARTER = "import sys; from api.cli import main; sys.argv[0] = 'tradecore'; main()"


def run(
    code: Path, env: dict[str, str], *args: str, importtime: bool = False
) -> subprocess.CompletedProcess[str]:
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run(
        [sys.executable, *flags, "-c", STARTER, *args],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--code",
        type=Path,
        default=_HERE.parent,
        help="Project checkout whose `tradecore` is measured.",
    )
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        {
            "PYTHONPATH": str(args.code),
            "TRADECORE_PERSISTENCE": "sqlite",
            "TRADECORE_SQLITE_PATH": str(folder / "events.sqlite"),
            "TRADECORE_READMODEL_SQLITE_PATH": str(folder / "readmodels.sqlite"),
            "TRADECORE_JWT_KEYS_PATH": str(folder / "keys.json"),
        }
    )
    opened = run(args.code, env, "account", "open", "alice", "--owner", "alice")
    if opened.returncode != 0:
        raise SystemExit(opened.stdout + opened.stderr)
    run(args.code, env, "account", "show", "alice")  # warm-up: bytecode, caches
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        shown = run(args.code, env, "account", "show", "alice")
        times.append(time.perf_counter() - started)
        if shown.returncode != 0:
            raise SystemExit(shown.stdout + shown.stderr)
    profile = run(args.code, env, "account", "show", "alice", importtime=True)
    imports: list[tuple[int, str]] = []
    for line in profile.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        imports.append((int(cumulative), name))
    top = sorted(imports, reverse=True)[:10]
    out: dict[str, Any] = {
        "command": "tradecore account show alice",
        "code": str(args.code),
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "wall_s": {
            "min": round(min(times), 3),
            "median": round(statistics.median(times), 3),
            "max": round(max(times), 3),
        },
        "slowest_imports_ms": {name: round(us / 1000, 1) for us, name in top},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
