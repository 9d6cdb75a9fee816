"""PVC encoder overhead: ProgressiveEncoder vs its base vision tower, side by side in one run.

At an InternViT-300M-like shape scaled down to run on a CPU in under a minute (the
proportions that set the overhead kept: 4x MLP ratio, 64-wide heads, a third of the layers
temporal, about as many tokens per frame as channels / 2), times, on the same frames:

  tower        the base InternVLVisionModel alone (an untouched deep copy)
  tower+proj   the base tower then the same pixel-shuffle compressor (plain per-frame
               compression, PVC without progressive encoding)
  pvc          ProgressiveEncoder.forward (temporal attention + AdaLN in the last third of
               the layers, then the compressor)

Calls alternate (tower, tower+proj, pvc, tower, ...) so machine drift hits all three alike;
the figures are medians and minima (on a shared machine the minimum is the steadier
estimate of the intrinsic cost). The matmul/attention FLOPs of each (``torch.utils.
flop_counter``; norms and elementwise ops not counted) give a contention-free ratio. The
issue's target: pvc at most 15% over the tower.

    .venv/bin/python benchmarks/bench_pvc_encoder.py [--repeats 5] [--frames 4] [--threads 1]
        [--layers 12 --width 512 --image 224] [--record] [--note "..."]

--record appends the figures, with the machine, date and --note, to benchmarks/RESULTS.md
under "PVC encoder overhead".
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent


def build(layers: int, width: int, image: int, patch: int, seed: int = 0):
    from transformers import InternVLVisionConfig, InternVLVisionModel

    cfg = InternVLVisionConfig(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=width // 64,
        image_size=[image, image],
        patch_size=[patch, patch],
    )
    cfg._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return InternVLVisionModel(cfg).eval()


def timed(fn, x) -> float:
    t0 = time.perf_counter()
    fn(x)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=4, help="frames of the one clip")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--patch", type=int, default=14)
    ap.add_argument("--tokens-per-frame", type=int, default=16)
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    ap.add_argument("--note", default="", help="a remark recorded with the figures")
    args = ap.parse_args()

    from vistoken.pvc import ProgressiveEncoder

    torch.set_num_threads(args.threads)
    tower = build(args.layers, args.width, args.image, args.patch)
    base = copy.deepcopy(tower)
    enc = ProgressiveEncoder(tower, 896, tokens_per_frame=args.tokens_per_frame).eval()
    g = torch.Generator().manual_seed(0)
    clip = torch.randn(1, args.frames, 3, args.image, args.image, generator=g)
    frames = clip.flatten(0, 1)

    def run_tower(x):
        return base(pixel_values=x).last_hidden_state

    def run_tower_proj(x):
        return enc.compress(base(pixel_values=x).last_hidden_state)

    def run_pvc(x):
        return enc(x)

    runs = {
        "tower": (run_tower, frames),
        "tower+proj": (run_tower_proj, frames),
        "pvc": (run_pvc, clip),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn, x in runs.values():  # warm-up
            fn(x)
        same = torch.equal(run_pvc(clip).flatten(0, 1), run_tower_proj(frames))
        for _ in range(args.repeats):
            for name, (fn, x) in runs.items():
                times[name].append(timed(fn, x))
        flops = {}
        for name, (fn, x) in runs.items():
            with FlopCounterMode(display=False) as counter:
                fn(x)
            flops[name] = counter.get_total_flops()
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    over_tower = med["pvc"] / med["tower"] - 1
    over_proj = med["pvc"] / med["tower+proj"] - 1
    over_min = low["pvc"] / low["tower"] - 1
    over_flops = flops["pvc"] / flops["tower"] - 1
    tokens = (args.image // args.patch) ** 2 + 1
    shape = (
        f"InternViT-300M-like, scaled: {args.layers} layers x {args.width} wide "
        f"({args.width // 64} heads, MLP {4 * args.width}), {args.image}px / {args.patch}px "
        "patches "
        f"({tokens} tokens per frame), 1 clip x {args.frames} frames, temporal layers "
        f"{enc.temporal_layers} (default, a third), adaln={enc.adaln}, "
        f"{args.tokens_per_frame} tokens per frame out"
    )
    print(shape)
    for k in runs:
        print(
            f"  {k:11s} median {med[k] * 1e3:8.1f} ms, min {low[k] * 1e3:8.1f} ms, "
            f"{flops[k] / 1e9:7.2f} GFLOP"
        )
    print(
        f"  pvc over tower: {over_tower:+.1%} (medians), {over_min:+.1%} (minima), "
        f"{over_flops:+.1%} (FLOPs); over tower+proj: {over_proj:+.1%} (medians); "
        f"zero-init output equals tower+proj: {same}"
    )
    if args.record:
        record(args, shape, med, low, flops, same)


def record(args, shape, med, low, flops, same) -> None:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    text = HERE / "RESULTS.md"
    lines = []
    if "## PVC encoder overhead" not in text.read_text():
        lines.append("\n## PVC encoder overhead\n")
    names = {"tower": "tower", "tower+proj": "tower + compressor", "pvc": "ProgressiveEncoder"}
    lines += [
        f"\n### bench_pvc_encoder.py: {when}, {os.cpu_count()} CPU cores ({cpu}), "
        f"{args.threads} torch thread(s), torch {torch.__version__}\n",
        f"{shape}; {args.repeats} alternating calls each.\n",
        "| run | median | min | GFLOP | median vs tower | min vs tower | FLOPs vs tower |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, label in names.items():
        lines.append(
            f"| {label} | {med[k] * 1e3:.1f} ms | {low[k] * 1e3:.1f} ms | {flops[k] / 1e9:.2f} "
            f"| {med[k] / med['tower'] - 1:+.1%} | {low[k] / low['tower'] - 1:+.1%} "
            f"| {flops[k] / flops['tower'] - 1:+.1%} |"
        )
    lines += ["", f"Zero-init ProgressiveEncoder output equals tower + compressor: {same}."]
    if args.note:
        lines += ["", args.note]
    with open(text, "a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
