"""Nothing lost, nothing doubled, whatever is killed when: the distributed deployment
as OS processes on the real broker, kill -9 at random moments.

``benchmarks/distributed.py --quick --phases chaos`` runs the same wave load twice, in
fresh schemas and topics: once crash-free, once while a random worker of a random kind
(relay, matching, saga, projections) is killed with SIGKILL and restarted, ten times,
and the run's own dev broker is killed -9 twice (it comes back empty: the relay
publishes the log again, the consumers drop what they already applied).
Both runs must end with equal balances, positions, orders and fills in the read models;
the write model's invariants hold; every read-model table equals a fresh replay of the
run's own log; no order short of or beyond its fills, no execution id twice; every
worker exits 0 on SIGTERM at the end. The full run (5,000 orders, 100 kills) is the
benchmark itself: ``python benchmarks/distributed.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_kill_minus_nine_loses_and_doubles_nothing(kafka_bootstrap: str,
                                                   tmp_path: Path) -> None:
    done = subprocess.run(
        ["env", f"PYTHONPATH={ROOT}", sys.executable, str(ROOT / "benchmarks" /
                                                          "distributed.py"),
         "--quick", "--phases", "chaos", "--keep", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=540, check=False)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}"
                     for p in sorted(tmp_path.rglob("*.log")))
    assert done.stdout.strip(), f"no output; stderr:\n{done.stderr[-4000:]}\n{logs}"
    out = json.loads(done.stdout)
    assert out["kills"] >= 10, out
    assert set(out["kills_by_worker"]) == {"relay", "matching", "saga", "projections"}, out
    # the broker itself was killed -9 twice: somebody said so on /readyz each time
    assert out["broker_restarts"] == 2, out
    assert all(o["not_ready"] for o in out["broker_outages"]), out
    assert out["lost"] == 0 and out["duplicated"] == 0, out
    assert all(out["equal_to_crash_free"].values()), out
    assert out["invariants_hold"], out
    assert out["read_models_equal_replay"], out
    assert all(code == 0 for code in out["chaos"]["exit_codes"].values()), (out, logs)
    assert done.returncode == 0, (out, done.stderr[-3000:])
