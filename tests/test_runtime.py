"""Allocator tuning: opt-in, once per process, and harmless where it does not apply."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "from semlens.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


@pytest.mark.parametrize("value, expected", [(None, "False False"), ("0", "False False"), ("1", "True True")])
def test_tuning_is_opt_in(value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("SEMLENS_TUNE_MALLOC", raising=False)
    else:
        monkeypatch.setenv("SEMLENS_TUNE_MALLOC", value)
    if value == "1" and not sys.platform.startswith("linux"):
        expected = "False False"
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected
