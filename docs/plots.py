#!/usr/bin/env python3
"""Draws the plots of docs/performance.md from benchmark output.

    cargo bench --bench renew                              # criterion writes target/criterion
    cargo bench --bench scenarios -- --dump /tmp/lateness  # raw expiry lateness, CSV
    python3 docs/plots.py target/criterion /tmp/lateness   # needs matplotlib

Writes docs/renew.png (renew time against lease count, 1 and 2 threads) and
docs/lateness.png (the distribution of expiry lateness, per durability mode).
"""

import csv
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def median_ns(criterion, group, size):
    path = os.path.join(criterion, group, str(size), "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"]


def renew_plot(criterion):
    sizes = [1_000, 100_000, 1_000_000]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    # renew/2_threads times one renewal on each thread: half of it is the amortised cost.
    groups = [("renew_1_thread", "1 thread", 1.0),
              ("renew_2_threads", "2 threads, amortised (time / 2)", 0.5)]
    for group, label, scale in groups:
        found = [(n, scale * median_ns(criterion, group, n)) for n in sizes
                 if os.path.exists(os.path.join(criterion, group, str(n)))]
        if found:
            ax.plot([n for n, _ in found], [t for _, t in found], marker="o", label=label)
    ax.axhline(336, color="grey", linestyle=":", label="etcd lessor, 100,000 leases (336 ns)")
    ax.axhline(40, color="green", linestyle="--", label="target at 100,000 (40 ns)")
    ax.set_xscale("log")
    ax.set_xlabel("live leases")
    ax.set_ylabel("ns per renew (median)")
    ax.set_title("renew")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "renew.png"), dpi=110)


def lateness_plot(dump_dir):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for path in sorted(glob.glob(os.path.join(dump_dir, "expiry-*-1.csv"))):
        mode = os.path.basename(path)[len("expiry-"):-len("-1.csv")]
        with open(path) as f:
            late = sorted(float(r["lateness_ms"]) for r in csv.DictReader(f))
        if not late:
            continue
        frac = [(i + 1) / len(late) for i in range(len(late))]
        ax.plot(late, frac, label=mode)
    ax.axvline(5, color="green", linestyle="--", label="target p99 (5 ms)")
    ax.axvline(500, color="grey", linestyle=":", label="etcd p99 (500 ms)")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("revocation time - deadline (ms)")
    ax.set_ylabel("fraction of leases")
    ax.set_title("expiry lateness, 100,000 leases over 10 s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "lateness.png"), dpi=110)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    renew_plot(sys.argv[1])
    lateness_plot(sys.argv[2])


if __name__ == "__main__":
    main()
