"""The shipped models' cards show what their committed reports say: every evaluation table and
"Gain over bicubic" line renders again from the JSON beside the card without a change, and the
temporal-use table from its report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from semlens.train.card import refresh_tables, with_columns

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
sys.path.insert(0, str(WEIGHTS.parent / "benchmarks"))
temporal_use = pytest.importorskip("temporal_use")

SECTIONS = {"Evaluation on the held-out set": "eval", "Compressed input: libx264 CRF 23": "eval-crf23",
            "Compressed input: libx264 CRF 30": "eval-crf30"}
MODELS = ["semlens-tiny-x4", "semlens-tiny-x2", "semlens-tiny-x4-bi", "semlens-tiny-x2-bi"]


def report(name: str, kind: str) -> dict:
    return json.loads((WEIGHTS / f"{name}.{kind}.json").read_text())


@pytest.mark.parametrize("name", MODELS)
def test_evaluation_tables_are_the_committed_reports(name: str) -> None:
    card = (WEIGHTS / f"{name}.md").read_text()
    # the defaults show their clean-input sibling's column beside their own
    sections = {heading: with_columns(report(name, kind), *([] if name.endswith("-bi") else [report(f"{name}-bi", kind)]))
                for heading, kind in SECTIONS.items()}
    assert refresh_tables(card, sections) == card


@pytest.mark.parametrize("name", MODELS)
def test_temporal_use_table_is_the_committed_report(name: str) -> None:
    card = (WEIGHTS / f"{name}.md").read_text()
    table = temporal_use.card_table(report(name, "temporal_use"))
    assert table in card
    assert report(name, "temporal_use")["weights_sha256"] in (WEIGHTS.parent / "semlens" / "hub" / "specs.py").read_text()
