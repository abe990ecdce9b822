"""Run one benchmark script at two git revisions, alternately, and compare a number it reports.

    python benchmarks/ab_revisions.py OLD_REV NEW_REV --script extractor.py --key lite_seconds_per_frame \
        [--runs 3] [--out results/extractor-ab.json] [-- SCRIPT ARGS...]

Each revision is checked out once (``git worktree add --detach`` under a temporary folder) and its own
copy of ``benchmarks/SCRIPT`` runs with that revision's ``semlens`` first on ``PYTHONPATH``; runs
alternate (old, new, old, new, ...) so the machine's drift hits both alike. The script must take
``--out`` and write JSON holding ``--key``. Reported: every run's value, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine, write_json

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--script", required=True, help="a script in benchmarks/ (e.g. extractor.py)")
    parser.add_argument("--key", required=True, help="the JSON key to compare")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=None)
    args, script_args = parser.parse_known_args()
    script_args = [a for a in script_args if a != "--"]
    revs = {name: _git("rev-parse", "--short", rev) for name, rev in (("old", args.old), ("new", args.new))}
    values: dict[str, list[float]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory(prefix="semlens-ab-") as tmp:
        trees = {}
        for name, rev in revs.items():
            trees[name] = Path(tmp) / name
            _git("worktree", "add", "--detach", str(trees[name]), rev)
        try:
            for i in range(args.runs):
                for name in ("old", "new"):
                    out = Path(tmp) / f"{name}-{i}.json"
                    env = {**os.environ, "PYTHONPATH": str(trees[name])}
                    subprocess.run([sys.executable, str(trees[name] / "benchmarks" / args.script), *script_args,
                                    "--out", str(out)], check=True, env=env, cwd=trees[name] / "benchmarks",
                                   stdout=subprocess.DEVNULL)
                    values[name].append(float(json.loads(out.read_text())[args.key]))
                    print(f"{name} ({revs[name]}) run {i + 1}: {values[name][-1]:.6g}", file=sys.stderr)
        finally:
            for tree in trees.values():
                _git("worktree", "remove", "--force", str(tree))
    med = {name: statistics.median(v) for name, v in values.items()}
    print(f"{args.key}: old {revs['old']} median {med['old']:.6g}, new {revs['new']} median {med['new']:.6g}, "
          f"old / new = {med['old'] / med['new']:.3f}")
    write_json(args.out, {"benchmark": "ab_revisions", "machine": machine(), "script": args.script,
                          "script_args": script_args, "key": args.key, "revisions": revs, "runs": values,
                          "median": med, "old_over_new": med["old"] / med["new"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
