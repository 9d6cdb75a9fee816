"""Hooks of the vistoken_synthetic task; the code lives in vistoken.lmms.task."""

from pathlib import Path

from vistoken.lmms.task import answer_of, doc_text, load_doc_media

_HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    return load_doc_media(doc, _HERE)


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc_text(doc)


def process_results(doc, results):
    return {"exact_match": float(answer_of(results[0]) == doc["answer"])}
