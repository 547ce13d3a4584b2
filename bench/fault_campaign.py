"""The 50%-fault campaign of issue 14, at full size: about 500 objects of every shape.

Runs tests/support/fault_campaign.py (the code CI runs with fewer objects) for
every fault at once and for flipped bytes only, and prints a Markdown table
for bench/RESULTS.md. Each export round runs in its own process; peak RSS is
that process's VmHWM.

    python bench/fault_campaign.py [--objects 500] [--seed 14] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fault_campaign import run_campaign  # noqa: E402
from tests.support.faulty_proxy import FAULTS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    for name, faults in (("all faults", FAULTS), ("flips only", ("flip",))):
        with tempfile.TemporaryDirectory(prefix="exitplan-campaign-") as work:
            result = run_campaign(
                Path(work),
                objects=args.objects,
                rate=0.5,
                faults=faults,
                rounds=args.rounds,
                seed_value=args.seed,
            )
        results.append((name, result))
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    print()
    print(
        "| faults at 50% | objects | shapes | rounds | byte-identical | unchecked "
        "| corrupt stored | failed at the end | staging left | peak RSS MiB | wall s | faults injected |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results:
        shapes = ", ".join(f"{k} {v}" for k, v in sorted(r.shapes.items()))
        injected = ", ".join(f"{k} {v}" for k, v in sorted(r.injected.items()))
        rounds = f"{r.rounds_run} ({' + '.join(f'{s:.1f} s' for s in r.round_seconds)})"
        print(
            f"| {name} | {r.objects} | {shapes} | {rounds} | {r.identical} | {r.unchecked} "
            f"| {len(r.corrupt_stored)} | {len(r.failed)} | {r.staging_left} | {r.peak_rss_mib} "
            f"| {r.seconds} | {injected} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps([{"name": n, **asdict(r), "ok": r.ok} for n, r in results], indent=2) + "\n"
        )
    return 0 if all(r.ok for _, r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
