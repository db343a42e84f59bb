"""The README's Python examples run as written, from any directory (a user copies them first)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_readme_has_python_examples():
    assert BLOCKS, "no ```python block in README.md"


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_python_example_runs_from_another_directory_and_prints_what_it_shows(code, tmp_path):
    """In a fresh interpreter in an empty directory: ``ehflow_core`` imports because the README's
    install installed it, not because the repository is the working directory."""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example prints nothing"


def test_the_readmes_presets_table_states_each_presets_kinetic_energy_and_learning_rate():
    """Each preset has a row in the README's table, whose "K, learning rate" is the preset's own."""
    from dashboard.settings import PRESETS

    table = README[README.index("### The presets") : README.index("### Hosting a class")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("| ")]
    for preset in PRESETS.values():
        row = next(r for r in rows if preset.label.startswith(r[0]) or r[0].startswith(preset.label))
        mantissa, exponent = f"{10**preset.log10_lr:.1e}".split("e")
        rate = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        assert row[2] == f"{'MLP' if preset.kinetic == 'mlp' else preset.kinetic}, {rate}", row
