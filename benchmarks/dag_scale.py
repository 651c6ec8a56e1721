"""How long Snakemake takes to build the paper-scale DAG, and how much memory, with no data present.

Writes, in a scratch folder, only the download manifests a finished download
would leave (shard lists of the given sizes: CC3M ~300, CC12M ~1,200,
LAION-400M ~41,000 shards of 10k), so the download checkpoint counts as done
and the DAG below it (augmentation per shard and variant, every training and
evaluation the tables need) is built in full; then times a dry run of the
target with ``/usr/bin/time -v`` and prints wall seconds, peak RSS and the job
count per rule.

    python benchmarks/dag_scale.py                                 # the three datasets, target all
    python benchmarks/dag_scale.py --shards laion400m=41000 --target all_tables
    python benchmarks/dag_scale.py --shards-per-job 1                 # one job per shard: the naive DAG
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_SHARDS = {"cc3m": 300, "cc12m": 1200, "laion400m": 41000}


def fake_downloads(workdir: Path, shards: dict[str, int], per_shard: int = 10000) -> None:
    for dataset, count in shards.items():
        out = workdir / "results" / "download" / dataset
        out.mkdir(parents=True, exist_ok=True)
        rows = [{"shard": f"{i:05d}", "tar": f"shards/{i:05d}.tar", "successes": per_shard} for i in range(count)]
        (out / "manifest.json").write_text(json.dumps({"shards": rows, "samples": per_shard * count}))


def dry_run(workdir: Path, target: str, configfile: Path, shards_per_job: int | None = None) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "snakemake", target, "-n", "--quiet", "rules",
               "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile)]
    if shards_per_job:
        command += ["--config", f"shards_per_job={shards_per_job}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"dry run failed:\n{result.stderr[-3000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout.split("Job stats:")[-1], re.M))
    return {"seconds": round(seconds, 1), "max_rss_mib": round(rss_kb / 1024), "jobs": {k: int(v) for k, v in jobs.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="*", default=[f"{k}={v}" for k, v in PAPER_SHARDS.items()],
                        help="dataset=count pairs (default: the paper's three datasets)")
    parser.add_argument("--target", default="all")
    parser.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--shards-per-job", type=int, help="override the config's shards_per_job (1: one job per shard)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    shards = {k: int(v) for k, v in (pair.split("=") for pair in args.shards)}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        fake_downloads(workdir, shards)
        result = {"shards": shards, "target": args.target, "shards_per_job": args.shards_per_job,
                  **dry_run(workdir, args.target, args.configfile, args.shards_per_job)}
    grouping = f", shards_per_job={args.shards_per_job}" if args.shards_per_job else ""
    print(f"DAG of {args.target!r} with {shards}{grouping}: {result['jobs'].get('total', '?')} jobs, "
          f"{result['seconds']} s, {result['max_rss_mib']} MiB peak")
    for rule, count in sorted(result["jobs"].items(), key=lambda kv: -kv[1]):
        print(f"  {rule:28s} {count}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
