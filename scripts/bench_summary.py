#!/usr/bin/env python3
"""Summarize scripts/bench.sh's CSV: medians per tool and phase, ccfs as ratios to each peer."""
import csv
import statistics
import sys
from collections import defaultdict

path, data_bytes, quick = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
rows = list(csv.DictReader(open(path)))
secs, rss, vals = defaultdict(list), defaultdict(list), defaultdict(list)
for r in rows:
    k = (r["tool"], r["phase"])
    if r["seconds"]:
        secs[k].append(float(r["seconds"]))
    if r["rss_kb"]:
        rss[k].append(int(r["rss_kb"]))
    if r["value"] and not r["value"].startswith("rc="):
        vals[k].append(r["value"])
tools = [t for t in dict.fromkeys(r["tool"] for r in rows) if t != "machine"]
peers = [t for t in tools if t != "ccfs"]
med = lambda xs: statistics.median(xs) if xs else None


def fmt(x, unit=""):
    return "–" if x is None else (f"{x:.3f}{unit}" if isinstance(x, float) else f"{x}{unit}")


print(f"# ccfs benchmark {'(quick) ' if quick else ''}— {path.rsplit('/', 1)[-1][:-4]}\n")
print(f"Dataset: {data_bytes} bytes ({data_bytes / 2**30:.3f} GiB), shared gen_dataset.py"
      f"{' minus large/rand_a.bin and large/text_b.txt' if quick else ''}. Medians of "
      f"{max((len(secs[(t, 'backup_initial')]) for t in tools), default=0)} iteration(s); page caches dropped before each timed phase.\n")
m = {p: med(secs[("machine", p)]) for p in ("sha256_1core", "zstd1_text_1core", "pagecache_read")}
mb = lambda p: int(vals[("machine", p)][0].split("=")[1]) if vals[("machine", p)] else 0
hash_limit = 2 * mb("sha256_1core") / m["sha256_1core"] / 1e6 if m["sha256_1core"] else None
print("Machine limits (same run): "
      f"SHA-256 1 core {mb('sha256_1core') / m['sha256_1core'] / 1e6:.0f} MB/s (2 cores ≈ {hash_limit:.0f} MB/s); "
      f"zstd -1 on text {mb('zstd1_text_1core') / m['zstd1_text_1core'] / 1e6:.0f} MB/s; "
      f"page-cache read {mb('pagecache_read') / m['pagecache_read'] / 1e9:.1f} GB/s.\n")

time_phases = ["backup_initial", "backup_unchanged", "backup_after_mutate", "restore", "mount_ready",
               "mount_find_cold", "mount_ls_l_2000_cold", "mount_ls_l_2000_warm", "mount_cat_256m_cold",
               "mount_cat_256m_warm", "mount_random_4k_x2000_cold"]
print("## Times (seconds, lower is better) and ccfs speed-up over each peer\n")
print("| phase | " + " | ".join(tools) + " | " + " | ".join(f"ccfs vs {p}" for p in peers) + " |")
print("|---|" + "---|" * (len(tools) + len(peers)))
for ph in time_phases:
    cells = [fmt(med(secs[(t, ph)])) for t in tools]
    c = med(secs[("ccfs", ph)])
    ratios = []
    for p in peers:
        x = med(secs[(p, ph)])
        ratios.append(f"{x / c:.2f}×" if c and x else "–")
    print(f"| {ph} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

print("\n## Peak RSS (KB, lower is better) and ccfs as a fraction of each peer\n")
print("| phase | " + " | ".join(tools) + " | " + " | ".join(f"ccfs / {p}" for p in peers) + " |")
print("|---|" + "---|" * (len(tools) + len(peers)))
for ph in ["backup_initial", "backup_unchanged", "backup_after_mutate", "restore", "mount_server_rss"]:
    cells = [fmt(med(rss[(t, ph)])) for t in tools]
    c = med(rss[("ccfs", ph)])
    ratios = [f"{c / med(rss[(p, ph)]):.2f}" if c and med(rss[(p, ph)]) else "–" for p in peers]
    print(f"| {ph} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")

print("\n## Sizes (bytes) and ccfs as a fraction of each peer\n")
print("| figure | " + " | ".join(tools) + " | " + " | ".join(f"ccfs / {p}" for p in peers) + " |")
print("|---|" + "---|" * (len(tools) + len(peers)))
for ph in ["repo_size", "growth_unchanged", "growth_after_mutate"]:
    nums = {t: med([int(v) for v in vals[(t, ph)]]) for t in tools}
    ratios = [f"{nums['ccfs'] / nums[p]:.3f}" if nums.get("ccfs") is not None and nums.get(p) else "–" for p in peers]
    print(f"| {ph} | " + " | ".join(fmt(nums[t]) for t in tools) + " | " + " | ".join(ratios) + " |")

print("\n## Deleting one snapshot of ten and reclaiming its space (first iteration)\n")
print("The third of ten snapshots (the first two hold the same data) is deleted. ccfs: `version "
      "delete` + `gc --grace 0`; restic: `forget ID --prune`; borg: `delete` + `compact`. File "
      "operations = repository files opened or deleted (strace), what each would cost in requests "
      "on an object store.\n")
print("| figure | " + " | ".join(tools) + " | " + " | ".join(f"ccfs vs {p}" for p in peers) + " |")
print("|---|" + "---|" * (len(tools) + len(peers)))
gsec = {t: med(secs[(t, "forget_one_and_reclaim")]) for t in tools}
print("| seconds | " + " | ".join(fmt(gsec[t]) for t in tools) + " | "
      + " | ".join(f"{gsec[p] / gsec['ccfs']:.2f}× faster" if gsec.get("ccfs") and gsec.get(p) else "–" for p in peers) + " |")
for ph, label in [("reclaim_repo_file_ops", "file operations"), ("reclaimed", "bytes reclaimed"),
                  ("repo_size_10_snapshots", "repository before (bytes)")]:
    nums = {t: med([int(v) for v in vals[(t, ph)]]) for t in tools}
    ratios = [f"{nums['ccfs'] / nums[p]:.3f}" if nums.get("ccfs") is not None and nums.get(p) else "–" for p in peers]
    print(f"| {label} | " + " | ".join(fmt(nums[t]) for t in tools) + " | " + " | ".join(ratios) + " |")
grss = {t: med(rss[(t, "forget_one_and_reclaim")]) for t in tools}
print("| peak RSS (KB) | " + " | ".join(fmt(grss[t]) for t in tools) + " | "
      + " | ".join(f"{grss['ccfs'] / grss[p]:.2f}" if grss.get("ccfs") and grss.get(p) else "–" for p in peers) + " |")

print("\n## Checks\n")
for t in tools:
    checks = {ph: sorted(set(vals[(t, ph)])) for ph in ("restore_verify", "mount_cat_verify")}
    print(f"- {t}: restore {checks['restore_verify'] or '–'}, mount read {checks['mount_cat_verify'] or '–'}")
c = med(secs[("ccfs", "backup_initial")])
if c and hash_limit:
    thr = data_bytes / c / 1e6
    print(f"\nccfs initial create: {thr:.0f} MB/s = {thr / hash_limit:.2f} of the two-core SHA-256 limit.")
