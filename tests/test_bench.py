"""A smoke run of the benchmark suite (tiny sizes) so it cannot rot; no timing is asserted."""

from __future__ import annotations

import json
import math

import pytest

from bench.__main__ import SECTIONS, main


def _finite_numbers(tree: object) -> list[float]:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _finite_numbers(v)]
    if isinstance(tree, list | tuple):
        return [x for v in tree for x in _finite_numbers(v)]
    return [float(tree)] if isinstance(tree, int | float) and not isinstance(tree, bool) else []


@pytest.mark.slow
def test_benchmark_suite_smoke_run_writes_every_section(tmp_path, capsys):
    out = tmp_path / "suite.json"
    main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(SECTIONS) <= set(result)
    assert result["paths"]["speedup"] == pytest.approx(
        result["paths"]["fast_steps_per_s"] / result["paths"]["reference_steps_per_s"]
    )
    assert result["sweep"]["members"] == 2 and result["memory"]["batch_256"]["peak_rss_mb"] > 0
    assert set(result["peers"]["tasks"]) == {"ring", "gaussians8", "ring_500"}
    for task in result["peers"]["tasks"].values():
        assert set(task["models"]) == {"hamiltonian_kappa0.01", "hamiltonian_none", "realnvp", "nsf"}
    assert all(math.isfinite(x) for x in _finite_numbers(result))
    table = capsys.readouterr().out
    assert "| fast path / reference |" in table and f"wrote {out}" in table
    assert set(result["constraint"]) == {"so2", "so4"} and result["constraint"]["so4"]["generators"] == 6
    assert "| so(4) | 6 |" in table


def test_benchmark_suite_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "paths,warp"])
    assert "unknown section(s) ['warp']" in capsys.readouterr().err
