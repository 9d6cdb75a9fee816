"""The tiny PVC's accuracy on the synthetic benchmark, beside the reference VLM it came from.

On the test split (``--samples``, every question type equally often):

* **pvc**: the tiny PVC (shipped, or ``--model PATH``), 49 tokens per frame, images as
  4-frame static videos (196 tokens);
* **pvc, blank video**: the same model, every frame a constant grey (is it reading pixels?);
* **reference**: the reference VLM it was converted from, all tokens (49 per frame after its
  2 x 2 pooling: the same LLM token count per video frame; images 406 tokens).

Prints the table; ``--record`` appends it, with the machine, date and the PVC's training cost
(from its ``train_log.jsonl``), to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_pvc.py [--samples 600] [--seed 0] [--model PATH]
        [--reference PATH] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from vistoken.eval import synthetic as syn
from vistoken.eval.reference import FRAMES, SIZE, load_reference
from vistoken.eval.runner import evaluate
from vistoken.pvc import train as pt
from vistoken.pvc.tiny import DEFAULT_PATH, load_pvc

HERE = Path(__file__).resolve().parent


def _row(name: str, v: dict) -> str:
    per = v["per_type"]
    cells = [f"{(per[q]['accuracy'] if isinstance(per[q], dict) else per[q]):.3f}"
             for q in syn.QTYPES]
    return f"| {name} | {v['accuracy']:.3f} | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--reference", type=Path, default=None)
    ap.add_argument("--record", action="store_true", help="append to benchmarks/RESULTS.md")
    args = ap.parse_args()
    samples = syn.dataset("test", args.samples, seed=args.seed, frames=FRAMES, size=SIZE)
    pvc, proc = load_pvc(args.model)
    ref, ref_proc = load_reference(args.reference)
    t0 = time.perf_counter()
    with torch.inference_mode():
        rows = {
            "pvc (49 tokens / frame)": pt.evaluate(pvc, proc, samples),
            "pvc, blank video": pt.evaluate(pvc, proc, syn.blanked(samples)),
            "reference (49 tokens / frame)": evaluate(ref, ref_proc, samples, [],
                                                      batch_size=16)["full"],
        }
    seconds = time.perf_counter() - t0
    lines = ["| model | overall | " + " | ".join(syn.QTYPES) + " |",
             "|" + "---|" * (len(syn.QTYPES) + 2),
             f"| chance | {sum(syn.CHANCE.values()) / len(syn.QTYPES):.3f} | "
             + " | ".join(f"{syn.CHANCE[q]:.3f}" for q in syn.QTYPES) + " |"]
    lines += [_row(k, v) for k, v in rows.items()]
    text = "\n".join(lines)
    print(text)
    print(f"{args.samples} test samples (seed {args.seed}): {seconds:.1f} s")
    if args.record:
        import transformers

        path = Path(args.model or DEFAULT_PATH)
        log = [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]
        minutes = max(r.get("elapsed", 0.0) for r in log) / 60
        steps = max(r["step"] for r in log)
        cpu = platform.processor() or platform.machine()
        when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(HERE / "RESULTS.md", "a") as fh:
            fh.write(
                f"\n\n### bench_pvc.py: {when}, {os.cpu_count()} CPU cores ({cpu}), "
                f"torch {torch.__version__}, transformers {transformers.__version__}\n\n"
                f"Command: `.venv/bin/python benchmarks/bench_pvc.py --samples {args.samples} "
                f"--seed {args.seed} --record` (PVC: {args.model or 'the shipped tiny PVC'}, "
                f"trained {steps} steps in {minutes:.1f} min; reference: "
                f"{args.reference or 'the shipped reference'}). Whole run {seconds:.1f} s.\n\n"
                f"{text}\n"
            )


if __name__ == "__main__":
    main()
