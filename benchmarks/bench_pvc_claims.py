"""PVC's two claims on the synthetic benchmark (issue 11, part 4), at equal LLM tokens per frame.

On the test split (``--samples``, every question type equally often), per question type:

1. **pvc**: the tiny PVC, 49 tokens per frame, progressive (``--pvc``, default the shipped);
2. **no progressive**: the same conversion and training without temporal attention and AdaLN
   (``vistoken train-pvc --no-progressive``), 49 tokens per frame (``--no-progressive DIR``);
3. **uncompressed**: the same conversion and training at 196 tokens per frame (pixel shuffle
   off; ``vistoken train-pvc --tokens-per-frame 196``; ``--uncompressed DIR``);
4. the uncompressed model under ``vt.apply`` with ``scc``, ``pool`` and ``random`` at 25%
   (49 tokens per frame on average: the training-free alternatives at PVC's token count).

Claims tested: "temporal redundancy is exploited on video" (1 beats 2 on the video types) and
"no loss on images thanks to the static-video repetition" (1 matches 3 on image_detail).
Each accuracy comes with its 95% Wilson interval; the two claims are read as differences
with a paired bootstrap interval over the same samples. Prints the table; ``--record``
appends it with the machine, date and each model's training cost (from its
``train_log.jsonl``) to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_pvc_claims.py --no-progressive DIR --uncompressed DIR
        [--pvc DIR] [--samples 600] [--seed 0] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import vistoken as vt
from vistoken.eval import synthetic as syn
from vistoken.eval.reference import FRAMES, SIZE
from vistoken.eval.runner import wilson
from vistoken.pvc import tiny
from vistoken.pvc.train import _targets

HERE = Path(__file__).resolve().parent
VIDEO = [q for q in syn.QTYPES if q != "image_detail"]


@torch.inference_mode()
def hits(model, proc, samples, batch_size=16):
    """(N,) 0/1 per sample: the argmax answer at the prompt's last position is right."""
    out = []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        batch = tiny.prompts(proc, chunk)
        pred = model(**batch, logits_to_keep=1).logits[:, -1].argmax(-1)
        out.append((pred == _targets(proc, chunk)).long())
    return torch.cat(out).numpy()


def cost(path: Path) -> str:
    log = [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]
    minutes = max(r.get("elapsed", 0.0) for r in log) / 60
    steps = max(r["step"] for r in log)
    return f"{steps} steps, {minutes:.1f} min"


def paired(a: np.ndarray, b: np.ndarray, gen: np.random.Generator, n: int = 2000):
    """Mean of a - b and its 95% paired-bootstrap interval."""
    d = a.astype(float) - b.astype(float)
    boots = d[gen.integers(0, len(d), (n, len(d)))].mean(1)
    return d.mean(), np.quantile(boots, 0.025), np.quantile(boots, 0.975)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pvc", type=Path, default=None)
    ap.add_argument("--no-progressive", type=Path, required=True)
    ap.add_argument("--uncompressed", type=Path, required=True)
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retention", type=float, default=0.25)
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    samples = syn.dataset("test", args.samples, seed=args.seed, frames=FRAMES, size=SIZE)
    qtypes = np.array([s.qtype for s in samples])
    paths = {"1. pvc (49 / frame, progressive)": args.pvc or tiny.DEFAULT_PATH,
             "2. no progressive (49 / frame)": args.no_progressive,
             "3. uncompressed (196 / frame)": args.uncompressed}
    rows, seconds = {}, {}
    for name, path in paths.items():
        model, proc = tiny.load_pvc(path)
        t0 = time.perf_counter()
        rows[name] = hits(model, proc, samples)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {rows[name].mean():.3f} ({seconds[name]:.0f} s)", flush=True)
    model, proc = tiny.load_pvc(args.uncompressed)
    for method in ("scc", "pool", "random"):
        name = f"4. uncompressed + {method} {args.retention:.0%}"
        t0 = time.perf_counter()
        with vt.apply(model, method, retention=args.retention):
            rows[name] = hits(model, proc, samples)
        seconds[name] = time.perf_counter() - t0
        print(f"{name}: {rows[name].mean():.3f} ({seconds[name]:.0f} s)", flush=True)

    def cell(h):
        lo, hi = wilson(int(h.sum()), len(h))
        return f"{h.mean():.3f} [{lo:.2f}, {hi:.2f}]"

    lines = ["| model | overall | video types | " + " | ".join(syn.QTYPES) + " |",
             "|" + "---|" * (len(syn.QTYPES) + 3)]
    video = np.isin(qtypes, VIDEO)
    for name, h in rows.items():
        lines.append(f"| {name} | {cell(h)} | {cell(h[video])} | "
                     + " | ".join(f"{h[qtypes == q].mean():.2f}" for q in syn.QTYPES) + " |")
    gen = np.random.default_rng(0)
    p1, p2, p3 = (rows[k] for k in paths)
    claims = []
    for label, a, b, mask in (
        ("1 - 2 on the video types (temporal redundancy exploited)", p1, p2, video),
        ("1 - 3 on image_detail (no loss on images)", p1, p3, qtypes == "image_detail"),
        ("1 - 3 on the video types", p1, p3, video),
    ):
        m, lo, hi = paired(a[mask], b[mask], gen)
        claims.append(f"- {label}: {m:+.3f} (95% paired bootstrap [{lo:+.3f}, {hi:+.3f}], "
                      f"{int(mask.sum())} samples)")
    text = "\n".join(lines) + "\n\n" + "\n".join(claims)
    print(text)
    total = sum(seconds.values())
    print(f"{args.samples} test samples (seed {args.seed}): {total:.1f} s")
    if args.record:
        import transformers

        cpu = platform.processor() or platform.machine()
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        costs = "; ".join(f"{k.split(' (')[0]}: {cost(Path(p))}" for k, p in paths.items())
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write(
                f"\n\n### bench_pvc_claims.py: {when}, {os.cpu_count()} CPU cores ({cpu}), "
                f"torch {torch.__version__}, transformers {transformers.__version__}\n\n"
                f"Command: `.venv/bin/python benchmarks/bench_pvc_claims.py --no-progressive "
                f"{args.no_progressive} --uncompressed {args.uncompressed} --samples "
                f"{args.samples} --seed {args.seed} --record`. Training ({costs}). Whole run "
                f"{total:.1f} s.\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
