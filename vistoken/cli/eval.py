"""``vistoken eval``: accuracy of every method and retention on the synthetic benchmark."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import (
    POSITIVE,
    UsageError,
    add_out,
    integer,
    name_list,
    output_folder,
    output_note,
    progress,
    ratio_list,
    resolve_device,
)

EVAL_NAMES = ("results.json", "results.csv", "results.png")
EVAL_OUT = "vistoken-eval"
BENCHMARKS = ("synthetic",)
SPLITS = ("test", "val", "train")
DEFAULT_METHODS = "scc,random,uniform,pool,tome,fastv,visionzip"
DEFAULT_RETENTION = "1.0,0.25,0.1"
DEFAULT_LIMIT = 200
DEFAULT_BATCH = 16


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="accuracy of the methods on the synthetic video-QA benchmark",
        description="Answer LIMIT samples of the synthetic video-QA benchmark with the "
        "reference LLaVA-OneVision model, uncompressed and with every method at every "
        "retention (through vt.apply), and report per setting: accuracy with a 95% Wilson "
        "interval, loyalty (share of answers equal to the full model's), visual tokens and "
        "prefill TFLOPs per sample, seconds and accuracy per question type. A retention 1.0 "
        "row is the uncompressed model. Prints a table and writes DIR/results.json, "
        "DIR/results.csv and DIR/results.png. Runs unchanged under 'torchrun "
        "--nproc_per_node P -m vistoken eval ...' or 'accelerate launch -m vistoken eval "
        "...' (batches shared out by rank, results written once by rank 0, the numbers of "
        f"one process). {output_note(EVAL_NAMES)}",
    )
    p.add_argument("--benchmark", default="synthetic", metavar="NAME",
                   help=f"the benchmark: {', '.join(BENCHMARKS)} (default: synthetic)")
    p.add_argument("--methods", type=name_list, default=name_list(DEFAULT_METHODS),
                   metavar="A,B,...",
                   help=f"comma-separated methods (default: {DEFAULT_METHODS}; see 'vistoken "
                   "methods')")
    p.add_argument("--retention", type=ratio_list, default=ratio_list(DEFAULT_RETENTION),
                   metavar="R,R,...",
                   help="comma-separated retention ratios in (0, 1] (default: "
                   f"{DEFAULT_RETENTION})")
    p.add_argument("--limit", type=POSITIVE, default=DEFAULT_LIMIT, metavar="N",
                   help=f"samples to evaluate, the first N of the split (default: "
                   f"{DEFAULT_LIMIT})")
    p.add_argument("--seed", type=integer(0), default=0, metavar="S",
                   help="benchmark seed: another seed draws a fresh set of the same "
                   "distribution (default: 0)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="benchmark split (default: test)")
    p.add_argument("--model", type=Path, metavar="PATH",
                   help="a save_pretrained folder of the reference model (default: the "
                   "checkpoint shipped in vistoken/eval/reference_model)")
    p.add_argument("--batch-size", type=POSITIVE, default=DEFAULT_BATCH, metavar="B",
                   help=f"samples per batch (default: {DEFAULT_BATCH})")
    add_out(p, EVAL_OUT)
    p.add_argument("--device", help="where the model runs, e.g. cpu or cuda (default: cuda "
                   "if available, else cpu; under torchrun each process takes "
                   "cuda:LOCAL_RANK)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    p.add_argument("--debug", action="store_true",
                   help="debug logging; show tracebacks on errors")


def _check_methods(names: list[str]) -> None:
    from ..core import get_method

    for name in names:
        try:
            get_method(name)
        except ValueError as exc:
            raise UsageError(f"argument --methods: {exc}") from None


def _load(ref: Any, path: Path, device: Any) -> tuple[Any, Any]:
    """The reference model and processor, without transformers' loading bar."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return ref.load_reference(path, device=device)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def run(args: argparse.Namespace) -> int:
    # everything cheap first, before the model is loaded
    if args.benchmark not in BENCHMARKS:
        raise UsageError(
            f"argument --benchmark: unknown benchmark {args.benchmark!r}; known benchmarks: "
            f"{', '.join(BENCHMARKS)}"
        )
    _check_methods(args.methods)
    device = resolve_device(args.device)
    out_dir = output_folder(args.out, EVAL_OUT, EVAL_NAMES)
    if args.model is not None and not args.model.exists():
        raise FileNotFoundError(f"--model {str(args.model)!r}: no such folder")

    from ..eval import distributed, runner
    from ..eval import reference as ref
    from ..eval import results as res
    from ..eval import synthetic as syn

    settings = [runner.Setting(m, r) for m in args.methods for r in args.retention]
    with distributed.context(device) as ctx:
        t0 = time.perf_counter()
        model_path = Path(ref.DEFAULT_PATH if args.model is None else args.model)
        model, processor = _load(ref, model_path, ctx.device)
        sha = res.weights_sha256(model_path)
        samples = syn.dataset(args.split, args.limit, seed=args.seed, frames=ref.FRAMES,
                              size=ref.SIZE)
        plan = runner.plan_batches(samples, args.batch_size)
        mine = distributed.shard(len(plan), ctx)
        records = runner.run_batches(
            model, processor, samples, settings, plan, mine, device=ctx.device,
            progress=progress(args) and ctx.main,
        )
        records = distributed.gather(records, ctx)
        if not ctx.main:
            return 0
        assert records is not None
        evaluation = runner.summarize(samples, settings, plan, records)
        evaluation["timing"]["total"] = time.perf_counter() - t0
    results = res.build_results(
        evaluation,
        samples,
        benchmark=args.benchmark,
        split=args.split,
        seed=args.seed,
        model=f"{model_path} (shipped)" if args.model is None else str(args.model),
        model_sha256=sha,
        batch_size=args.batch_size,
        processes=ctx.world,
        device=str(ctx.device.type),
    )
    paths = res.write_results(results, out_dir)
    print(res.format_table(results))
    print(
        f"ran {len(samples)} samples x {len(settings) + 1} settings in "
        f"{results['timing']['total']:.1f} s"
        + (f" on {ctx.world} processes" if ctx.world > 1 else "")
    )
    for name in EVAL_NAMES:
        print(f"wrote {paths[name]}")
    return 0
