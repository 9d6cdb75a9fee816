"""The field's published setting through lmms-eval and vistoken's plugin, and its table.

LLaVA-OneVision-7B at 32 frames on MVBench, VideoMME (without subtitles), MLVU dev,
LongVideoBench val and the EgoSchema subset, every method at retention 1.0 / 0.35 / 0.25 /
0.1 / 0.05 (1.0 once: the uncompressed model, ``vt_method=none``). One lmms-eval command per
(method, retention), all tasks at once; each writes lmms-eval's results and vistoken's
report under ``OUT/<method>_<retention>/``. A finished setting is not run again (delete its
folder to redo it), so the script resumes. Then it writes ``OUT/table.md``: accuracy per
benchmark, the published numbers of REFERENCE.md beside them (empty where none is
published), visual tokens and prefill TFLOPs per sample.

    python benchmarks/lmms_grid.py --out lmms-grid                      # one GPU
    python benchmarks/lmms_grid.py --out lmms-grid --launch "accelerate launch \\
        --multi_gpu --num_processes 8 --main_process_port 29501"        # 8 GPUs
    python benchmarks/lmms_grid.py --out lmms-grid --dry-run            # print the commands
    python benchmarks/lmms_grid.py --out lmms-grid --table-only         # table of what ran

Needs ``pip install "vistoken[lmms]"`` and the benchmarks' data (lmms-eval downloads them
from the Hugging Face hub on first use).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

MODEL = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
FRAMES = 32
#: (lmms-eval task, column, the metric key of its results)
TASKS = (
    ("mvbench", "MVBench", "mvbench_accuracy,none"),
    ("videomme", "VideoMME (w/o subs)", "videomme_perception_score,none"),
    ("mlvu_dev", "MLVU dev", "mlvu_percetion_score,none"),
    ("longvideobench_val_v", "LongVideoBench val", "lvb_acc,none"),
    ("egoschema_subset", "EgoSchema subset", "score,none"),
)
METHODS = ("scc", "fastv", "visionzip", "random", "uniform", "pool", "dycoke", "vidcom2")
RETENTIONS = (0.35, 0.25, 0.1, 0.05)
#: published numbers (REFERENCE.md; LLaVA-OneVision-7B, 32 frames): (method, retention) ->
#: column -> accuracy. Nothing else is published there: the other cells stay empty.
PUBLISHED = {
    ("none", 1.0): {"VideoMME (w/o subs)": 58.6, "EgoSchema subset": 60.4},
    ("scc", 0.1): {"VideoMME (w/o subs)": 55.8, "EgoSchema subset": 57.5},
    ("scc", 0.05): {"VideoMME (w/o subs)": 53.3, "EgoSchema subset": 56.6},
}
#: published prefill TFLOPs (REFERENCE.md section 4, FastV's formula)
PUBLISHED_TFLOPS = {1.0: 41.4, 0.1: 4.0, 0.05: 2.2}


def settings() -> list[tuple[str, float]]:
    return [("none", 1.0)] + [(m, r) for m in METHODS for r in RETENTIONS]


def command(method: str, retention: float, out: Path, launch: str, model: str,
            frames: int, limit: int | None) -> list[str]:
    args = f"pretrained={model},max_frames_num={frames}"
    if not launch:  # one process: llava_hf needs an explicit device_map (several: cuda:RANK)
        args += ",device_map=cuda:0"
    args += f",vt_method={method}"
    if method != "none":
        args += f",vt_retention={retention}"
    folder = out / f"{method}_{retention}"
    args += f",vt_report={folder / 'vistoken.json'}"
    cmd = [*shlex.split(launch), "-m", "lmms_eval"] if launch else [sys.executable, "-m",
                                                                     "lmms_eval"]
    cmd += ["--model", "vistoken_llava_onevision", "--model_args", args,
            "--tasks", ",".join(t for t, _, _ in TASKS), "--batch_size", "1",
            "--output_path", str(folder), "--log_samples"]
    if limit:
        cmd += ["--limit", str(limit)]
    return cmd


def _score(results: dict, task: str, key: str) -> float | None:
    row = results.get("results", {}).get(task, {})
    value = row.get(key)
    if value is None:  # the first numeric metric of the task, whatever its name
        value = next((v for k, v in row.items() if k.endswith(",none")
                      and isinstance(v, (int, float)) and "stderr" not in k), None)
    if value is None:
        return None
    return value * 100 if value <= 1.0 else value


def _cell(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"


def table(out: Path) -> str:
    head = ["method", "retention"]
    for _, col, _ in TASKS:
        head += [col, f"{col} (published)"]
    head += ["visual tokens", "prefill TFLOPs", "TFLOPs (published)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, r in settings():
        folder = out / f"{method}_{r}"
        found = sorted(folder.glob("**/*_results.json"))
        results = json.loads(found[-1].read_text()) if found else {}
        report = folder / "vistoken.json"
        figures = json.loads(report.read_text())["figures"] if report.exists() else {}
        cells = [method, str(r)]
        published = PUBLISHED.get((method, r), {})
        for task, col, key in TASKS:
            cells += [_cell(_score(results, task, key)) if results else "",
                      _cell(published.get(col))]
        cells += [_cell(figures.get("visual_tokens_after")),
                  "" if figures.get("prefill_tflops") is None
                  else f"{figures['prefill_tflops']:.2f}",
                  _cell(PUBLISHED_TFLOPS.get(r)) if method in ("none", "scc") else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("lmms-grid"))
    p.add_argument("--launch", default="", help="launcher prefix, e.g. 'accelerate launch "
                   "--multi_gpu --num_processes 8' (default: this Python, one process)")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--frames", type=int, default=FRAMES)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--limit", type=int, default=None, help="samples per task (smoke runs)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    p.add_argument("--table-only", action="store_true", help="write the table of what ran")
    a = p.parse_args(argv)
    wanted = set(a.methods.split(",")) | {"none"}
    if not a.table_only:
        for method, r in settings():
            if method not in wanted:
                continue
            cmd = command(method, r, a.out, a.launch, a.model, a.frames, a.limit)
            folder = a.out / f"{method}_{r}"
            if a.dry_run:
                print(shlex.join(cmd))
                continue
            if sorted(folder.glob("**/*_results.json")):
                print(f"done already: {folder}")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            print(shlex.join(cmd), flush=True)
            code = subprocess.call(cmd)
            if code != 0 or not sorted(folder.glob("**/*_results.json")):
                # lmms-eval exits 0 after a failed evaluation: the results file is the proof
                print(f"failed: {method} at {r} (exit {code}, no results file)", file=sys.stderr)
                return 1
    if a.dry_run:
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    text = table(a.out)
    (a.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
