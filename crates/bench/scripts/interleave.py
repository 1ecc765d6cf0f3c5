#!/usr/bin/env python3
"""Runs the issue-11 fan-out comparison interleaved, and prints medians.

Each round runs every server at every rate, in the same order, so that a
machine that drifts during the sitting drifts for all of them alike:

    crates/bench/scripts/interleave.py --rounds 3 \
        --server new=gateway:target/release/chouquette \
        --server old=gateway:/tmp/chouquette-old \
        --server floor=floor

A server is `label=gateway:BINARY` (a gateway binary, given to the bench
as `--gateway`) or `label=floor`. The figures come from the JSON line each
run prints last; every run's line is also appended to `--log`.
"""

import argparse
import json
import statistics
import subprocess
import sys

BENCH = "target/release/chouquette-bench"


def run(server: str, rate: int, args: argparse.Namespace) -> dict:
    kind, _, binary = server.partition(":")
    cmd = [BENCH, "--server", kind, "--server-cpus", args.server_cpus,
           "--scenario", "broadcast", "-n", str(args.connections),
           "--channels", str(args.channels), "--rate", str(rate),
           "--duration", args.duration]
    if binary:
        cmd += ["--gateway", binary]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"run failed ({' '.join(cmd)}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", action="append", required=True)
    p.add_argument("--rate", action="append", type=int)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--duration", default="20s")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--log", default="interleave.jsonl")
    args = p.parse_args()
    rates = args.rate or [50, 100]
    servers = [s.split("=", 1) for s in args.server]
    results: dict = {}
    with open(args.log, "a", encoding="utf-8") as log:
        for round_ in range(args.rounds):
            for rate in rates:
                for label, server in servers:
                    summary = run(server, rate, args)
                    log.write(json.dumps({"label": label, "rate": rate,
                                          "round": round_, **summary}) + "\n")
                    log.flush()
                    load = summary["load"]
                    lat = load["latency"] or {}
                    row = (load["gateway_cpu_us_per_delivery"],
                           load["gateway_user_us_per_delivery"],
                           lat.get("p50_ms"), lat.get("p99_ms"),
                           load["deliveries"], load["deliveries_expected"],
                           load["gateway_cpu_percent"])
                    results.setdefault((label, rate), []).append(row)
                    print(f"round {round_} {label} {rate}/s: cpu {row[0]:.2f} µs "
                          f"(user {row[1]:.2f}), p50 {row[2]} p99 {row[3]} ms, "
                          f"{row[4]}/{row[5]} delivered, {row[6]:.0f} % core",
                          flush=True)
    print("\nmedians (cpu µs per delivery, user µs, p50 ms, p99 ms):")
    for (label, rate), rows in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"{label:>8} {rate * args.connections // args.channels:>7}/s: "
              f"{med[0]:.2f} µs (user {med[1]:.2f}), p50 {med[2]:.1f}, p99 {med[3]:.1f} ms")


if __name__ == "__main__":
    main()
