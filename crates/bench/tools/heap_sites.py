#!/usr/bin/env python3
"""Peak heap of a heaptrack run, by the place that allocated it.

Usage: heap_sites.py STACKS N [TOP]
  STACKS: `heaptrack_print -f FILE --flamegraph-cost-type peak -F STACKS`
  N: connections held at the peak (bytes are divided by it)

Each allocation stack is charged to the innermost frame of the gateway's
own stack (chouquette, tungstenite, hyper, axum, tokio, mio, bytes, ...),
or to `TASK <spawner>` when it is a tokio task cell (a spawned future).
Symbols are demangled with `c++filt`.
"""

import collections
import re
import subprocess
import sys

OWN = re.compile(r"chouquette|tungstenite|hyper|axum|tokio|mio|sharded|tracing|bytes::")
LIBRARY = re.compile(r"raw_vec|alloc::|core::")
SPAWNER = re.compile(r"spawn|on_upgrade|Task::run|serve_public|accept")


def demangled(frames):
    text = "\n".join(f.split(" (")[0] for f in frames)
    out = subprocess.run(["c++filt"], input=text, capture_output=True, text=True).stdout
    clean = lambda s: re.sub(r"::h[0-9a-f]{16}$", "", re.sub(r"\[[0-9a-f]+\]", "", s))
    return dict(zip(frames, map(clean, out.split("\n"))))


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    stacks = []
    for line in open(path):
        stack, cost = line.rstrip("\n").rsplit(" ", 1)
        stacks.append((stack.split(";"), int(cost)))
    names = demangled(sorted({f for s, _ in stacks for f in s}))
    sites = collections.Counter()
    for stack, cost in stacks:
        frames = [names.get(f, f) for f in stack]
        if any("task::core::Cell" in f for f in frames):
            spawners = [f for f in frames if SPAWNER.search(f)]
            sites["TASK " + (spawners[-1] if spawners else "?")] += cost
            continue
        own = [f for f in frames if OWN.search(f) and not LIBRARY.search(f)]
        sites[own[-1] if own else frames[-1]] += cost
    total = sum(sites.values())
    print(f"peak {total} B, {total / n:.0f} B per connection")
    for site, cost in sites.most_common(top):
        print(f"{cost / n:8.1f} B  {site[:150]}")


if __name__ == "__main__":
    main()
