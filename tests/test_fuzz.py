"""Short coverage-guided fuzz runs of each native twin against its pure twin (fuzz/differential.py);
a long run is documented in docs/benchmarks.md."""

from __future__ import annotations

import re

import pytest

from .twins import native_twin, run_python


@pytest.mark.parametrize("stem", ["frames", "envelope"])
def test_short_differential_fuzz_run_finds_no_difference(stem: str) -> None:
    native_twin(stem)  # skipped (or failed under KEFU_EXPECT_NATIVE=1) when the extension is not built
    result = run_python(f"import sys; from fuzz.differential import main; main(['fuzz', '{stem}', '-atheris_runs=4000', '-seed=1'])")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert re.search(r"Done 4000 in", output), output[-3000:]
