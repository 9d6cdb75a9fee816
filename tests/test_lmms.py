"""The lmms-eval plugin (vistoken.lmms), end to end through lmms-eval's own command line.

lmms-eval lives in .venv-lmms (``make test`` builds it once, ``.ci/lmms-venv``); the runs are
subprocesses of its Python, offline, on the shipped reference model saved as a local
checkpoint and the shipped ``vistoken_synthetic`` task. Expected values are computed here,
in this process, with ``vistoken eval`` and ``vt.apply``. The pure parts (model_args, task
files, the import without lmms-eval) are tested without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vistoken.lmms import options
from vistoken.lmms import task as vtask

ROOT = Path(__file__).resolve().parents[1]
#: samples of the shipped task the end-to-end runs answer (one of each question type)
LIMIT = 6
#: one thread per process: on a busy 2-core machine torch's thread pool spins itself slow,
#: and every run here (and the expected values) computes in the same thread setting
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def lmms_python() -> Path:
    path = Path(os.environ.get("VISTOKEN_LMMS_PYTHON", ROOT / ".venv-lmms" / "bin" / "python"))
    if not path.exists():
        pytest.fail(f"no lmms-eval environment at {path}: run 'make lmms-venv' (or 'make test', "
                    "which builds it), or point VISTOKEN_LMMS_PYTHON at a Python with "
                    "vistoken[lmms]")
    return path


# --------------------------------------------------------------------------------------------
# without lmms-eval


def test_plugin_imports_without_lmms_eval():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'lmms_eval':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import vistoken.lmms, vistoken.lmms.options, vistoken.lmms.task\n"
        "import vistoken.lmms.metrics, vistoken.lmms.report\n"
        "print(sorted(vistoken.lmms.MODELS))\n"
        "try:\n"
        "    import vistoken.lmms.wrappers\n"
        "except ImportError as e:\n"
        "    print('wrappers need lmms-eval:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert ("['vistoken_gemma4', 'vistoken_internvl', 'vistoken_llava_onevision', "
            "'vistoken_qwen2_5_vl', 'vistoken_qwen2_vl', 'vistoken_qwen3_5', "
            "'vistoken_qwen3_vl']") in out
    assert "wrappers need lmms-eval: blocked: lmms_eval" in out


@pytest.mark.parametrize("args, message", [
    ({"vt_method": "nope"}, "unknown method 'nope'; known methods: "),
    ({"vt_method": "scc", "vt_retention": 1.5}, "vt_retention must be in (0, 1], got 1.5"),
    ({"vt_method": "scc", "vt_retention": 0}, "vt_retention must be in (0, 1], got 0"),
    ({"vt_method": "scc", "vt_retention": "half"}, "vt_retention must be a real number"),
    ({"vt_method": "scc", "vt_retention": 0.1, "vt_layer": 2},
     "unknown option(s) vt_layer for method 'scc'; accepted: vt_retention, vt_tau"),
    ({"vt_method": "fastv", "vt_layer": 0.5}, "fastv option layer must be an integer"),
    ({"vt_retention": 0.1}, "vt_retention given with vt_method=none"),
    ({"vt_method": "scc", "vt_retention": 0.1, "vt_tau": 0.9}, "either retention or tau"),
])
def test_bad_vt_args_are_one_line(args, message):
    with pytest.raises(options.VtArgError) as info:
        options.split_model_args({"pretrained": "x", **args})
    text = str(info.value)
    assert message in text and text.startswith("vistoken: ") and "\n" not in text


def test_vt_args_are_split_off():
    vt, rest = options.split_model_args({"pretrained": "p", "max_frames_num": 32,
                                         "vt_method": "SCC", "vt_retention": 0.1,
                                         "vt_mode": "official", "vt_report": "r.json"})
    assert rest == {"pretrained": "p", "max_frames_num": 32}
    assert (vt.method, vt.retention, vt.options, vt.report) == ("scc", 0.1, {"mode": "official"},
                                                                "r.json")
    vt, rest = options.split_model_args({"pretrained": "p"})
    assert not vt.active and rest == {"pretrained": "p"}
    vt, _ = options.split_model_args({"vt_method": "fastv"})
    assert vt.retention == 0.5  # FastV's own default (the paper's R)


def test_shipped_task_is_the_first_test_samples(tmp_path):
    from vistoken.eval import reference as ref
    from vistoken.eval import synthetic as syn

    rows = [json.loads(line) for line in
            (vtask.TASK_DIR / vtask.TASK / "data" / "test.jsonl").read_text().splitlines()]
    assert rows == vtask.doc_rows(vtask.SAMPLES)
    samples = syn.dataset("test", vtask.SAMPLES, frames=ref.FRAMES, size=ref.SIZE)
    assert [r["answer"] for r in rows] == [s.answer for s in samples]
    assert {r["qtype"] for r in rows} == set(syn.QTYPES)


def test_task_videos_decode_to_the_rendered_pixels(tmp_path):
    import av
    import numpy as np

    doc = vtask.doc_rows(2)[1]
    path = vtask.media_path(doc, tmp_path)
    with av.open(str(path)) as c:
        got = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert np.array_equal(got, vtask.sample_of(doc).frames)
    assert vtask.media_path(doc, tmp_path) == path  # rendered once, then reused
    image = vtask.load_doc_media(vtask.doc_rows(6)[5], tmp_path)[0]
    assert np.array_equal(np.asarray(image), vtask.sample_of(vtask.doc_rows(6)[5]).frames[0])


# --------------------------------------------------------------------------------------------
# lmms-eval's command line


@pytest.fixture(scope="module")
def lmms(tmp_path_factory):
    """Run lmms-eval on the shipped task and reference checkpoint: run(name, model, args)."""
    python = lmms_python()
    root = tmp_path_factory.mktemp("lmms")
    checkpoint = vtask.save_reference_checkpoint(root / "reference")
    tasks = root / "tasks"
    shutil.copytree(vtask.TASK_DIR, tasks, ignore=shutil.ignore_patterns("media", "__pycache__"))
    env = {**os.environ, **THREADS, **OFFLINE, "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    runs: dict[str, dict] = {}

    def run(name, model, vt_args="", *, nproc=1, extra=(), check=True):
        out = root / name
        model_args = f"pretrained={checkpoint},device_map=cpu,max_frames_num=16"
        if model.startswith("vistoken_"):
            model_args += f",vt_report={out / 'vistoken.json'}"
        if vt_args:
            model_args += "," + vt_args
        launch = [str(python), "-m", "lmms_eval"]
        if nproc > 1:
            launch = [str(python), "-m", "torch.distributed.run", "--standalone",
                      "--nproc_per_node", str(nproc), "-m", "lmms_eval"]
        cmd = [*launch, "--model", model, "--model_args", model_args,
               "--tasks", vtask.TASK, "--include_path", str(tasks), "--batch_size", "1",
               "--device", "cpu", "--limit", str(LIMIT), "--output_path", str(out),
               "--log_samples", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root,
                              timeout=1800)  # a safety net: ~30 s of CPU each
        found = sorted(out.glob("**/*_results.json"))
        if not check:
            return {"proc": proc}
        # lmms-eval exits 0 after a failed evaluation: the results file is the proof
        assert proc.returncode == 0 and found, (
            f"lmms-eval {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
        samples = sorted(out.glob(f"**/*_samples_{vtask.TASK}.jsonl"))
        assert samples, f"no samples file under {out}"
        docs = [json.loads(line) for line in samples[0].read_text().splitlines()]
        result = {
            "results": json.loads(found[0].read_text()),
            "answers": {d["doc_id"]: _text(d["filtered_resps"]) for d in docs},
            "proc": proc,
        }
        report = out / "vistoken.json"
        if report.exists():
            result["report"] = json.loads(report.read_text())
        runs[name] = result
        return result

    run.checkpoint = checkpoint
    run.runs = runs
    return run


def _text(resps):
    """A logged sample's output (lmms-eval 0.7.3 logs the filtered response as a string)."""
    return resps if isinstance(resps, str) else resps[0]


def _accuracy(result):
    return result["results"]["results"][vtask.TASK]["exact_match,none"]


@pytest.fixture(scope="module")
def expected(lmms):
    """``vistoken eval``'s full accuracy and answers, and ``vt.apply``'s scc answers, alone."""
    import torch

    import vistoken as vt
    from vistoken.cli import main
    from vistoken.eval.reference import decode_answers, load_reference, prompts

    out = Path(lmms.checkpoint).parent / "vistoken-eval"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["eval", "--limit", str(LIMIT), "--methods", "scc", "--retention", "0.25",
                     "--model", str(lmms.checkpoint), "--out", str(out), "--device", "cpu",
                     "-q"]) == 0
        model, processor = load_reference(lmms.checkpoint)
        samples = [vtask.sample_of(d) for d in vtask.doc_rows(LIMIT)]
        answers, visual = [], []
        with torch.inference_mode():
            for s in samples:  # one at a time, as lmms-eval's wrapper asks
                batch = prompts(processor, [s])
                with vt.apply(model, "scc", retention=0.25) as h:
                    gen = model.generate(**batch, max_new_tokens=1, do_sample=False,
                                         pad_token_id=processor.tokenizer.pad_token_id)
                    ids = batch["input_ids"][0]
                    placeholders = int(torch.isin(ids, torch.tensor(
                        [model.config.image_token_id, model.config.video_token_id])).sum())
                    visual.append(placeholders - h.stats["visual_tokens"] + h.stats["kept_tokens"])
                answers.append(decode_answers(processor, gen[:, ids.shape[0]:])[0])
    finally:
        torch.set_num_threads(threads)
    results = json.loads((out / "results.json").read_text())
    return {"eval": results, "scc_answers": answers, "scc_visual": visual}


def test_none_is_lmms_eval_and_vistoken_eval(lmms, expected):
    base = lmms("llava_hf", "llava_hf", extra=("--force_simple",))
    none = lmms("none", "vistoken_llava_onevision", "vt_method=none")
    assert none["answers"] == base["answers"]  # every sample's output, exactly
    assert len(none["answers"]) == LIMIT
    full = expected["eval"]["full"]
    assert _accuracy(none) == _accuracy(base) == full["accuracy"]
    answers = [vtask.answer_of(none["answers"][i]) for i in range(LIMIT)]
    assert answers == full["answers"]
    fig = none["report"]["figures"]
    assert fig["samples"] == LIMIT
    assert fig["visual_tokens_before"] == fig["visual_tokens_after"] == full["visual_tokens"]
    assert fig["prefill_tflops"] == pytest.approx(full["prefill_tflops"], rel=1e-9)
    assert fig["ttft_seconds"] > 0 and fig["tpot_seconds"] > 0
    assert none["report"]["setting"]["method"] == "none"


def test_scc_drops_tokens_and_answers_as_vt_apply(lmms, expected):
    scc = lmms("scc", "vistoken_llava_onevision", "vt_method=scc,vt_retention=0.25")
    none = lmms.runs.get("none") or lmms("none", "vistoken_llava_onevision", "vt_method=none")
    answers = [vtask.answer_of(scc["answers"][i]) for i in range(LIMIT)]
    assert answers == expected["scc_answers"]
    fig, full = scc["report"]["figures"], none["report"]["figures"]
    assert fig["visual_tokens_before"] == full["visual_tokens_before"]
    assert fig["visual_tokens_after"] == sum(expected["scc_visual"]) / LIMIT
    assert fig["visual_tokens_after"] < 0.3 * fig["visual_tokens_before"]
    assert fig["prefill_tflops"] < 0.5 * full["prefill_tflops"]
    assert fig["compress_seconds"] > 0 and full["compress_seconds"] == 0
    records = scc["report"]["records"]
    assert [r["visual_after"] for r in records] and all(
        r["visual_after"] < r["visual_before"] for r in records)
    tp = scc["results"]["throughput"]  # lmms-eval's own results file
    assert tp["avg_vistoken_visual_tokens_after"] == fig["visual_tokens_after"]
    assert tp["avg_vistoken_prefill_tflops"] == pytest.approx(fig["prefill_tflops"])
    assert scc["report"]["setting"] == {"method": "scc", "retention": 0.25, "options": {}}


def test_two_processes_equal_one(lmms):
    one = lmms.runs.get("scc") or lmms("scc", "vistoken_llava_onevision",
                                        "vt_method=scc,vt_retention=0.25")
    two = lmms("scc2", "vistoken_llava_onevision", "vt_method=scc,vt_retention=0.25", nproc=2)
    assert two["answers"] == one["answers"]
    assert _accuracy(two) == _accuracy(one)
    assert two["report"]["world_size"] == 2
    a, b = one["report"]["figures"], two["report"]["figures"]
    for key in ("samples", "visual_tokens_before", "visual_tokens_after", "prefill_tflops",
                "text_tokens", "output_tokens"):
        assert b[key] == pytest.approx(a[key], rel=1e-12), key
    assert two["results"]["throughput"]["avg_vistoken_samples"] == LIMIT  # both ranks merged


def test_bad_model_args_fail_at_start_up(lmms):
    bad = lmms("bad", "vistoken_llava_onevision", "vt_method=scc,vt_retention=1.5", check=False)
    proc = bad["proc"]
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "vistoken: bad model_args: vt_retention must be in (0, 1], got 1.5"
    assert "Model Responding" not in proc.stderr


def test_recorder_counts_tokens_flops_and_times():
    import torch

    import vistoken as vt
    from vistoken.core import budget_for
    from vistoken.eval.reference import load_reference, prompts
    from vistoken.flops import prefill_flops
    from vistoken.lmms.metrics import Recorder, summarize

    model, processor = load_reference()
    batch = prompts(processor, [vtask.sample_of(vtask.doc_rows(1)[0])])
    text = int(batch["attention_mask"].sum()) - 785  # a 16-frame video: 16 x 49 + 1 newline
    cfg = model.config
    for method, retention, after, flops in [
        ("none", None, 785, prefill_flops(cfg, 785, text)),
        ("scc", 0.25, 785 - 784 + budget_for(0.25, 784), None),
        ("fastv", 0.5, budget_for(0.5, 785),
         prefill_flops(cfg, 785, text, 0.5, method="fastv")),
    ]:
        handle = None if method == "none" else vt.apply(model, method, retention=retention)
        rec = Recorder(model, handle, method=method, retention=retention)
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False,
                           pad_token_id=processor.tokenizer.pad_token_id)
        rec.remove()
        if handle is not None:
            handle.remove()
        assert "generate" not in model.__dict__  # the instance is as before
        (r,) = rec.dump()
        assert (r["visual_before"], r["visual_after"], r["text"]) == (785, after, text), method
        expected = prefill_flops(cfg, after, text) if flops is None else flops
        assert r["prefill_tflops"] == pytest.approx(expected / 1e12, rel=1e-12)
        assert r["output_tokens"] == 3 and r["decode_steps"] == 2
        assert 0 < r["ttft"] <= r["generate_seconds"]
        assert (r["compress_seconds"] > 0) == (method == "scc")
        fig = summarize(rec.dump())
        assert fig["tpot_seconds"] == pytest.approx(r["decode_seconds"] / 2)


def test_grid_table_holds_published_numbers_only(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmms_grid", ROOT / "benchmarks" / "lmms_grid.py")
    grid = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grid)
    assert len(grid.settings()) == 1 + 8 * 4  # the full model once, 8 methods x 4 retentions
    cmd = grid.command("scc", 0.1, tmp_path, "", grid.MODEL, 32, None)
    args = cmd[cmd.index("--model_args") + 1]
    assert "max_frames_num=32" in args and "vt_method=scc,vt_retention=0.1" in args
    assert cmd[cmd.index("--tasks") + 1].split(",") == [t for t, _, _ in grid.TASKS]
    # one finished run: its measured cell is filled, the published ones beside it
    run = tmp_path / "scc_0.1" / "model"
    run.mkdir(parents=True)
    (run / "x_results.json").write_text(json.dumps({"results": {"videomme": {
        "videomme_perception_score,none": 54.25}}}))
    (tmp_path / "scc_0.1" / "vistoken.json").write_text(json.dumps({"figures": {
        "visual_tokens_after": 628.0, "prefill_tflops": 3.9187}}))
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in grid.table(tmp_path).splitlines()[2:]}
    cells = [c.strip() for c in rows[("scc", "0.1")].strip("|").split("|")]
    assert cells[4:6] == ["54.2", "55.8"] and cells[10:12] == ["", "57.5"]
    assert cells[-3:] == ["628.0", "3.92", "4.0"]
    untouched = [c.strip() for c in rows[("fastv", "0.25")].strip("|").split("|")]
    assert untouched[2:] == [""] * (len(untouched) - 2)  # nothing published, nothing run


# --------------------------------------------------------------------------------------------
# the other families, on tiny random checkpoints (tests/lmms_helpers.py)

#: samples the family runs answer: the task's first two (videos of 16 frames)
FAMILY_LIMIT = 2


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory):
    """run(family, setting): lmms-eval's command line through ``lmms_capture.py`` on the
    family's tiny checkpoint (saved once), each (family, setting) run once; setting "base"
    is lmms-eval's own wrapper (``--force_simple``: the simple one, as vistoken's), else the
    ``vt_method``. The result holds the answers, the report and every ``generate`` call."""
    import torch
    from lmms_helpers import FAMILIES, save_checkpoint

    python = lmms_python()
    root = tmp_path_factory.mktemp("lmms_families")
    tasks = root / "tasks"
    shutil.copytree(vtask.TASK_DIR, tasks, ignore=shutil.ignore_patterns("media", "__pycache__"))
    env = {**os.environ, **THREADS, **OFFLINE, "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    done: dict[tuple[str, str], dict] = {}

    def run(name, setting):
        if (name, setting) in done:
            return done[(name, setting)]
        fam = FAMILIES[name]
        checkpoint = root / name
        if not (checkpoint / "config.json").exists():
            save_checkpoint(fam, checkpoint)
        out = root / f"{name}-{setting}"
        args = f"pretrained={checkpoint},{fam.model_args}"
        model, extra = fam.base, ["--force_simple"]
        if setting != "base":
            model, extra = fam.wrapper, []
            args += f",vt_report={out / 'vistoken.json'},vt_method={setting}"
            args += ",vt_retention=0.25" if setting != "none" else ""
        cmd = [str(python), str(ROOT / "tests" / "lmms_capture.py"), str(out / "calls.pt"),
               "--model", model, "--model_args", args, "--tasks", vtask.TASK,
               "--include_path", str(tasks), "--batch_size", "1", "--device", "cpu",
               "--limit", str(FAMILY_LIMIT), "--output_path", str(out), "--log_samples", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root,
                              timeout=1800)
        found = sorted(out.glob("**/*_results.json"))
        assert proc.returncode == 0 and found, (
            f"lmms-eval {name} {setting} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
        samples = sorted(out.glob(f"**/*_samples_{vtask.TASK}.jsonl"))
        docs = [json.loads(line) for line in samples[0].read_text().splitlines()]
        result = {
            "answers": {d["doc_id"]: _text(d["filtered_resps"]) for d in docs},
            "calls": torch.load(out / "calls.pt", weights_only=False),
            "checkpoint": checkpoint,
        }
        if setting != "base":
            result["report"] = json.loads((out / "vistoken.json").read_text())
        done[(name, setting)] = result
        return result

    return run


FAMILY_NAMES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "internvl", "gemma4"]
#: the families whose vt_method=none run is also compared with lmms-eval's own wrapper (two
#: lmms-eval runs, ~45 s on 2 cores): the none path is the mixin's, the same for every
#: family; these two cover a Qwen wrapper (M-RoPE, qwen_vl_utils) and Gemma 4's. Every
#: family's scc run is checked against vt.apply
NONE_FAMILIES = ["qwen2_vl", "gemma4"]


def _visual_count(model, ids):
    """The prompt's image and video placeholders (what the report counts as before)."""
    import torch

    cfg = model.config  # InternVL has image placeholders only (its video frames are images)
    ids_ = [getattr(cfg, k, None) for k in ("image_token_id", "video_token_id")]
    visual = torch.tensor([i for i in ids_ if i is not None])
    return int(torch.isin(ids, visual).sum())


def _doc_of(call, tokenizer, docs):
    """The document a generate call answers: the one whose question its prompt holds
    (compared without whitespace: the tiny character-level tokenizer decodes with a space
    between tokens)."""
    prompt = "".join(tokenizer.decode(call["kwargs"]["input_ids"][0]).split())
    found = [d["doc_id"] for d in docs if "".join(d["question"].split()) in prompt]
    assert len(found) == 1, (found, prompt)
    return found[0]


@pytest.mark.parametrize("name", NONE_FAMILIES)
def test_family_none_is_the_base_wrapper(family_runs, name):
    """vt_method=none: the inputs of every generate call, the outputs and the answers are
    those of lmms-eval's own wrapper, and the video reached the model (its visual tokens
    are in the prompt and the report counts them)."""
    import torch

    base, none = family_runs(name, "base"), family_runs(name, "none")
    assert none["answers"] == base["answers"] and len(none["answers"]) == FAMILY_LIMIT
    assert len(none["calls"]) == len(base["calls"]) == FAMILY_LIMIT
    for a, b in zip(none["calls"], base["calls"], strict=True):
        assert a["kwargs"].keys() == b["kwargs"].keys()
        for key, value in a["kwargs"].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b["kwargs"][key]), key
            else:
                assert value == b["kwargs"][key], key
        assert torch.equal(a["sequences"], b["sequences"])
    from lmms_helpers import FAMILIES, load_checkpoint

    model, _ = load_checkpoint(FAMILIES[name], none["checkpoint"])
    visual = [_visual_count(model, c["kwargs"]["input_ids"]) for c in none["calls"]]
    assert all(v > 0 for v in visual)
    records = none["report"]["records"]
    assert [r["visual_before"] for r in records] == visual
    assert [r["visual_after"] for r in records] == visual
    assert none["report"]["figures"]["compress_seconds"] == 0


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_family_scc_drops_tokens_and_answers_as_vt_apply(family_runs, name):
    """vt_method=scc,vt_retention=0.25: every generate call lmms-eval's wrapper made (its
    inputs as the wrapper built them: chat template, frame sampling and resizing are
    lmms-eval's) is run again here on the same checkpoint with ``vt.apply`` outside
    lmms-eval: the generated ids are the same, so is each sample's answer (decoded and cut
    as the wrapper does), and the report's visual tokens after are the budgets vt.apply
    gave (``budget_for(0.25, n)`` per compressed video)."""
    import torch
    from lmms_helpers import FAMILIES, load_checkpoint

    import vistoken as vt
    from vistoken.core import budget_for

    fam = FAMILIES[name]
    scc = family_runs(name, "scc")
    model, tokenizer = load_checkpoint(fam, scc["checkpoint"])
    docs = vtask.doc_rows(FAMILY_LIMIT)
    before, after = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for call in scc["calls"]:
            kwargs = call["kwargs"]
            ids = kwargs["input_ids"]
            with torch.inference_mode(), vt.apply(model, "scc", retention=0.25) as h:
                out = model.generate(**kwargs)
            assert torch.equal(out, call["sequences"])
            assert h.last and all(u.num_tokens == budget_for(0.25, u.sources.numel())
                                  for u in h.last)
            n = _visual_count(model, ids)
            before.append(n)
            after.append(n - sum(u.sources.numel() for u in h.last)
                         + sum(u.num_tokens for u in h.last))
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert scc["answers"][_doc_of(call, tokenizer, docs)] == fam.answer(text)
    finally:
        torch.set_num_threads(threads)
    records = scc["report"]["records"]
    assert [r["visual_before"] for r in records] == before
    assert [r["visual_after"] for r in records] == after
    assert all(a < 0.3 * b for a, b in zip(after, before, strict=True))
    fig = scc["report"]["figures"]
    assert fig["visual_tokens_after"] == sum(after) / FAMILY_LIMIT
    assert fig["compress_seconds"] > 0
    assert scc["report"]["setting"] == {"method": "scc", "retention": 0.25, "options": {}}
