"""The reference model's own accuracy: all tokens, and "blind" (is it reading the pixels?).

On the synthetic benchmark's test split (``--samples`` of them, every question type equally
often), the shipped reference model (or ``--model PATH``) answers:

* **full**: every visual token;
* **blank**: every video / image replaced by a blank one (a constant mid-grey frame of the
  same shape), all its tokens kept;
* **one token**: ``vt.apply(model, "uniform", retention=1e-9)``: one visual token per video
  or image (the first frame's first token).

A model that answers from the pixels is near chance blind; one that answers from priors of
the question text is not. Prints the table; ``--record`` appends it, with the machine and
date, to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_reference.py [--samples 600] [--seed 0] [--model PATH]
        [--batch-size 16] [--record]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from vistoken.eval import synthetic as syn
from vistoken.eval.reference import FRAMES, SIZE, load_reference
from vistoken.eval.runner import evaluate

HERE = Path(__file__).resolve().parent


def table(rows: dict[str, dict]) -> str:
    types = list(syn.QTYPES)
    head = "| input | overall | " + " | ".join(types) + " |"
    lines = [head, "|" + "---|" * (len(types) + 2)]
    lines.append(f"| chance | {sum(syn.CHANCE.values()) / len(types):.3f} | "
                 + " | ".join(f"{syn.CHANCE[q]:.3f}" for q in types) + " |")
    for name, row in rows.items():
        lines.append(f"| {name} | {row['accuracy']:.3f} | "
                     + " | ".join(f"{row['per_type'][q]['accuracy']:.3f}" for q in types) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    model, processor = load_reference(args.model)
    samples = syn.dataset("test", args.samples, seed=args.seed, frames=FRAMES, size=SIZE)
    t0 = time.perf_counter()
    with torch.inference_mode():
        full = evaluate(model, processor, samples, [("uniform", 1e-9)],
                        batch_size=args.batch_size)
        blank_run = evaluate(model, processor, syn.blanked(samples), [], batch_size=args.batch_size)
    seconds = time.perf_counter() - t0
    rows = {"full (all tokens)": full["full"], "blank video": blank_run["full"],
            "one visual token": full["rows"][0]}
    text = table(rows)
    print(text)
    print(f"{args.samples} test samples (seed {args.seed}), 3 conditions: {seconds:.1f} s")
    if args.record:
        import transformers

        cpu = platform.processor() or platform.machine()
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write(
                f"\n\n### bench_reference.py: {when}, {os.cpu_count()} CPU cores ({cpu}), "
                f"torch {torch.__version__}, transformers {transformers.__version__}\n\n"
                f"Command: `.venv/bin/python benchmarks/bench_reference.py --samples "
                f"{args.samples} --seed {args.seed} --record` (model: "
                f"{args.model or 'the shipped reference'}). Test split, {args.samples} samples "
                f"({args.samples // len(syn.QTYPES)} per type); one visual token = "
                "`uniform` at retention 1e-9. Whole run "
                f"{seconds:.1f} s.\n\n{text}\n"
            )


if __name__ == "__main__":
    main()
