"""A smoke run of the benchmark suite (tiny sizes) so it cannot rot; no timing is asserted."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

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


def test_a_merged_suite_keeps_each_sections_commit_and_date():
    from bench.__main__ import merged

    old = {"commit": "aaaaaaa", "when": "d1", "paths": {}, "scaling": {}, "section_when": {"paths": "d1"}}
    new = {"commit": "bbbbbbb", "when": "d2", "scaling": {"x": 1}, "section_when": {"scaling": "d2"},
           "section_commit": {"scaling": "bbbbbbb"}}  # fmt: skip
    result = merged(old, new)
    assert result["section_commit"] == {"paths": "aaaaaaa", "scaling": "bbbbbbb"}
    assert result["section_when"] == {"paths": "d1", "scaling": "d2"} and result["scaling"] == {"x": 1}
    assert result["commit"] == "aaaaaaa, bbbbbbb"


def test_benchmark_suite_rejects_unknown_sections(capsys):
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "paths,warp"])
    assert "unknown section(s) ['warp']" in capsys.readouterr().err


def test_every_results_file_says_where_its_numbers_come_from():
    """Each ``bench/results/*.json`` records its benchmark, the commit it measured, when, on what
    machine, and by what command (``bench/provenance.py``): the commit as git names it (a file of
    several invocations lists each), never "not recorded" nor a work tree with uncommitted changes."""
    import re
    from pathlib import Path

    from bench.provenance import KEYS

    files = sorted((Path(__file__).resolve().parents[1] / "bench" / "results").glob("*.json"))
    assert files
    for path in files:
        result = json.loads(path.read_text())
        missing = [key for key in KEYS if not str(result.get(key, "")).strip()]
        assert missing == [], f"{path.name} lacks {missing}"
        assert re.fullmatch(r"[0-9a-f]{7,40}(, [0-9a-f]{7,40})*", result["commit"]), (path.name, result["commit"])


def test_a_merged_quality_file_names_every_commit_and_command_that_made_its_rows():
    from bench.provenance import merged_provenance

    first = {"benchmark": "quality", "commit": "aaaaaaa", "command": "python -m bench.quality --seconds 30"}
    second = {**first, "commit": "bbbbbbb", "command": "python -m bench.quality --seconds 150 --merge"}
    assert merged_provenance({"rows": []}, first) == first
    merged = merged_provenance({**first, "rows": [{}]}, second)
    assert merged["commit"] == "aaaaaaa, bbbbbbb"
    assert (
        merged["command"] == "python -m bench.quality --seconds 30; then python -m bench.quality --seconds 150 --merge"
    )
    assert merged_provenance({**merged, "rows": [{}]}, second) == merged  # the same invocation again adds nothing


def _classroom_rows_in_the_docs(name: str, first_cell, rss_cell) -> dict:
    """Check docs/benchmarks.md's classroom table of bench/results/``name`` cell by cell: each row's
    line starts with ``first_cell(row)`` and its RSS cell is ``rss_cell(row)``. Returns the file."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "bench" / "results" / name).read_text())
    docs = (root / "docs" / "benchmarks.md").read_text()
    assert f"commit `{result['commit']}`" in docs
    for row in result["classroom"]:
        line = next(x for x in docs.splitlines() if re.match(rf"\| {re.escape(first_cell(row))} \| [\d,]+ MB", x))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == rss_cell(row), cells
        assert cells[3] == f"{row['health_training']['p50_ms']:.1f} / {row['health_training']['p99_ms']:.0f} ms", cells
        assert cells[4] == f"{row['health_opening']['p99_ms']:.0f} / {row['health_closing']['p99_ms']:.0f} ms", cells
        assert cells[5] == f"{row['admitted']} / {row['waiting']}", cells
        steps = row["steps_per_s"]
        assert cells[6] == f"{steps['min']:.1f} / {steps['median']:.1f} / {steps['max']:.1f}", cells
        assert cells[7] == f"{row['fairness_min_over_median']:.2f}", cells
        assert cells[8] == f"{row['freed_after_close_s']:.1f} s", cells
    return result


def test_the_classroom_table_in_the_docs_is_the_results_file():
    """docs/benchmarks.md's classroom table, cell by cell against bench/results/classroom.json:
    the prose cannot drift from the data."""
    _classroom_rows_in_the_docs("classroom.json", lambda r: str(r["sessions"]), lambda r: f"{r['rss_mb']:,.0f} MB")


def test_the_teaching_classrooms_table_in_the_docs_is_its_results_file():
    """The same for the classroom with the teaching tools in use (bench/results/classroom_teaching.json)."""
    result = _classroom_rows_in_the_docs(
        "classroom_teaching.json",
        lambda r: f"{r['sessions']}, {r['mix']}",
        lambda r: f"{r['rss_mb']:,.0f} MB ({r['rss_per_run_mb']:.0f} MB)",
    )
    assert {row["mix"] for row in result["classroom"]} == {"plain", "teaching"}


def _generated(doc: str, marker: str) -> str:
    """The text between ``<!-- marker -->`` and ``<!-- /marker -->`` in docs/``doc``."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
    return text.split(f"<!-- {marker} -->\n", 1)[1].split(f"\n<!-- /{marker} -->", 1)[0]


def _cites(doc: str, result: dict) -> bool:
    """Whether docs/``doc`` names the commit ``result`` was measured at (each commit of a merged
    file's list, as commit `abc1234`)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / doc).read_text()
    return all(f"commit `{commit}`" in text for commit in result["commit"].split(", "))


# The further quality studies of docs/results.md's "Quality per second" (levers, and runs with the
# peers at 150 s): bench/results/quality_<name>.json, each shown as `bench.quality.table <name>`.
QUALITY_STUDIES = ("levers", "average", "capacity", "moons", "moons_150", "ring_150", "steps", "kappa", "warm_150")
# The studies shown against NSF as `bench.quality.against_peer <name>`: their settings, and the
# peers shown beside NSF without a verdict.
AGAINST_PEER_STUDIES = {
    "full_cov": (["default", "default_full_cov"], ("realnvp",)),
    "w64": (["default", "default_w64"], ("realnvp",)),
    "150": (["default"], ()),
    "colmajor": (["default"], ()),
    "kappa_cb": (["default_kappa0.1", "default_kappa0.1_cb128", "default_cb128"], ()),
    "warm": (["default", "default_lr5e3_warm"], ()),
    "defaults_warm": (["default"], ()),
    "defaults_warm_150": (["default"], ()),
}
# Studies shown against NSF rows of another file, same budget and machine (the peer's training has
# not changed since): study -> that file.
PEER_ROWS_FROM = {"defaults_warm_150": "quality_150.json"}


def _result(name: str) -> dict:
    from pathlib import Path

    return json.loads((Path(__file__).resolve().parents[1] / "bench" / "results" / name).read_text())


def test_the_quality_and_plateau_tables_are_generated_from_their_results_files():
    """docs/results.md's every-target, ring and plateau tables are their benchmarks' Markdown of the
    files, and the text names the commits they were measured at."""
    from bench.plateau import markdown as plateau_markdown
    from bench.quality import against_peer, table

    quality, ring = _result("quality.json"), _result("quality_ring.json")
    assert _generated("results.md", "bench.quality.against_peer") == against_peer(
        quality["rows"], ["default", "default_convex", "default_harmonic"], beside=("realnvp",)
    )
    assert _generated("results.md", "bench.quality.table ring") == table(_ring_rows(quality, ring))
    init = _result("quality_init.json")
    assert _generated("results.md", "bench.quality.against_peer init") == against_peer(
        _init_rows(quality, init), ["default", "default_pytorch_init"], beside=("realnvp",)
    )
    for name in QUALITY_STUDIES:
        assert _generated("results.md", f"bench.quality.table {name}") == table(_result(f"quality_{name}.json")["rows"])
    for name, (settings, beside) in AGAINST_PEER_STUDIES.items():
        rows = _result(f"quality_{name}.json")["rows"]
        if name in PEER_ROWS_FROM:
            rows = rows + [r for r in _result(PEER_ROWS_FROM[name])["rows"] if r["setting"] == "nsf"]
        assert _generated("results.md", f"bench.quality.against_peer {name}") == against_peer(
            rows, settings, beside=beside
        )
    assert _generated("results.md", "bench.quality.table init_hard") == table(
        [r for r in init["rows"] if r["setting"] == "default_hard"]
    )
    from bench.average import markdown as average_markdown

    average = _result("average.json")
    assert _generated("results.md", "bench.average.markdown") == average_markdown(average)
    assert _cites("results.md", average)
    assert _generated("results.md", "bench.plateau.markdown") == plateau_markdown(_result("plateau.json"))
    assert _generated("results.md", "bench.plateau.markdown init") == plateau_markdown(_result("plateau_init.json"))
    plateaus = (_result("plateau.json"), _result("plateau_init.json"))
    levers = [_result(f"quality_{name}.json") for name in ("init_150", *AGAINST_PEER_STUDIES, *QUALITY_STUDIES)]
    files = (quality, ring, init, *levers, *plateaus)
    assert all(_cites("results.md", r) for r in files)
    assert all(r.keys() >= {"commit", "when", "command"} for r in quality["rows"])  # each row's own provenance


def _init_rows(quality: dict, init: dict) -> list[dict]:
    """The first layer's scale table's rows: at 30 s the defaults, the defaults with PyTorch's
    initialisation of U, NSF and RealNVP from one run; at 150 s the defaults, NSF and RealNVP, with
    NSF's rows for the ring and the 8 Gaussians from the every-target file."""
    peers = [r for r in quality["rows"] if r["setting"] == "nsf" and r["budget_s"] == 150]
    own = [r for r in init["rows"] if r["setting"] != "default_hard"]
    return own + _result("quality_init_150.json")["rows"] + peers


def _ring_rows(quality: dict, ring: dict) -> list[dict]:
    """The ring table's rows: the paper's configuration and the exact symmetry, and beside them the
    defaults and NSF at the same budget from the every-target file."""
    beside = [
        r
        for r in quality["rows"]
        if r["target"] == "ring" and r["budget_s"] == 30 and r["setting"] in ("default", "nsf")
    ]
    return ring["rows"] + beside


# The finite-data studies: bench/results/<name>.json (with the constraint) and <name>_none.json
# (without), and any further files of the same study shown in the same table.
FINITE_STUDIES = {
    "constraint_at": (), "constraint_convex": (), "constraint_convex_two_rings": (), "constraint_init": (),
    "constraint_warm": ("constraint_warm_before", "constraint_lam"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FINITE_STUDIES))
def test_the_finite_data_tables_are_generated_from_their_results_files(name):
    """docs/results.md's finite-data tables (where the constraint is evaluated; with the convex K)
    are bench.quality's table of each one's files' rows, and name the commits they were measured at."""
    from bench.quality import table

    constrained, unconstrained = _result(f"{name}.json"), _result(f"{name}_none.json")
    further = [_result(f"{extra}.json") for extra in FINITE_STUDIES[name]]
    rows = unconstrained["rows"] + constrained["rows"] + [r for result in further for r in result["rows"]]
    assert _generated("results.md", f"bench.quality.table {name}") == table(rows)
    assert _cites("results.md", constrained) and constrained["commit"] == unconstrained["commit"]
    assert all(_cites("results.md", result) for result in further)


def test_the_step_tables_in_the_docs_are_generated_from_the_results_file():
    """docs/benchmarks.md's speed and profile tables are bench.step.markdown of bench/results/step.json."""
    from bench.step import markdown

    result = _result("step.json")
    assert _generated("benchmarks.md", "bench.step.markdown") == markdown(result)
    assert _cites("benchmarks.md", result)


def test_the_startup_table_in_the_docs_is_generated_from_the_results_file():
    """docs/benchmarks.md's start-up table is bench.startup.markdown of bench/results/startup.json."""
    from bench.startup import markdown

    result = _result("startup.json")
    assert _generated("benchmarks.md", "bench.startup.markdown") == markdown(result)
    assert _cites("benchmarks.md", result)


def test_the_presets_table_is_generated_from_its_results_file():
    """docs/presets.md's table is bench.presets.markdown of bench/results/presets.json."""
    from bench.presets import markdown

    result = _result("presets.json")
    assert _generated("presets.md", "bench.presets.markdown") == markdown(result)
    assert _cites("presets.md", result)


def test_the_preset_pictures_table_is_generated_from_its_results_file_and_its_pictures_exist():
    """docs/presets.md's 400-step table is bench.preset_pictures.markdown of its file, every preset
    of the dashboard has a row for each of three seeds, and each picture it shows is committed."""
    from bench.preset_pictures import markdown
    from bench.presets import PRESETS

    result = _result("preset_pictures.json")
    assert _generated("presets.md", "bench.preset_pictures.markdown") == markdown(result)
    assert _cites("presets.md", result)
    runs = sorted((r["preset"], r["seed"]) for r in result["rows"])
    assert runs == sorted((p, s) for p in PRESETS for s in range(3))
    root = Path(__file__).resolve().parents[1]
    assert all((root / r["picture"]).is_file() and r["steps"] == 400 for r in result["rows"])


def test_every_mean_and_sd_of_the_quality_section_is_a_group_of_its_results_files():
    """Each "mean ± sd" in docs/results.md's "Quality per second" (its tables and its prose) is the
    gap over the seeds of one (target, setting, κ, budget) of bench/results/quality.json,
    quality_init.json, quality_init_150.json, quality_ring.json or a study's file
    (``AGAINST_PEER_STUDIES``, ``QUALITY_STUDIES``):
    the same mean and sd to the digits shown."""
    import re

    groups: dict[tuple, list[float]] = {}
    for name in (
        "quality.json",
        "quality_init.json",
        "quality_init_150.json",
        "quality_ring.json",
        *(f"quality_{name}.json" for name in (*AGAINST_PEER_STUDIES, *QUALITY_STUDIES)),
    ):
        for r in _result(name)["rows"]:
            key = (name, r["target"], r["setting"], r["kappa"], round(r["budget_s"]))
            groups.setdefault(key, []).append(r["gap_nats"])
    shown = {(f"{statistics.fmean(v):.3f}", f"{statistics.stdev(v):.3f}") for v in groups.values() if len(v) > 1}
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    section = text[text.index("## Quality per second") : text.index("### Why the flow stalls")]
    stated = re.findall(r"(-?\d\.\d{3}) ± (\d\.\d{3})", section)
    assert len(stated) >= 20
    assert [pair for pair in stated if pair not in shown] == []


def test_the_dashboards_row_in_the_docs_is_its_results_file():
    """docs/benchmarks.md's one-user dashboard row states bench/results/dashboard.json's numbers."""
    from pathlib import Path

    d = _result("dashboard.json")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| dashboard, real browser, one user"))
    rss = [mb for _, mb in d["server_rss_mb"]]
    for text in (
        f"commit `{d['commit']}`", f"**{d['usable_page_s']:.1f} s**", f"**{d['train_to_first_chart_s']:.2f} s**",
        f"**{min(d['refreshes_per_s']):.2f}–{max(d['refreshes_per_s']):.2f}**",
        f"**{100 * d['charts_visible_share']:.0f} %**",
        f"**{min(d['slider_effect_s']):.2f}–{max(d['slider_effect_s']):.2f} s**", f"{d['feed_kb_per_s']:.0f} kB/s",
        f"**{d['streaming_steps_per_s']:.1f}** steps/s", f"{d['headless_steps_per_s']:.1f} headless",
        f"**{100 * d['streaming_share_of_headless']:.0f} %**", f"RSS {min(rss):.0f}–{max(rss):.0f} MB",
    ):  # fmt: skip
        assert text in row, text


def test_the_gpu_paragraph_in_the_docs_is_its_results_file():
    """docs/benchmarks.md's GPU figures state bench/results/gpu.json's numbers and commit, and every
    check of that run passed."""
    from pathlib import Path

    d = _result("gpu.json")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    assert d["failures"] == []
    paper, defaults = d["train_steps_per_s_paper_config_float32"], d["train_steps_per_s_defaults_float32"]
    side = d["side_by_side_with_plain_autograd"]
    for text in (
        f"commit `{d['commit']}`", "| " + " | ".join(f"{v:.1f}" for v in paper.values()) + " |",
        "| " + " | ".join(f"{v:.1f}" for v in defaults.values()) + " |",
        *(f"**{r['ratio']:.2f}×** ({r['project_steps_per_s']:.1f} against {r['plain_steps_per_s']:.1f}"
          for r in side.values()),
    ):  # fmt: skip
        assert text in docs, text


def test_the_suites_speed_rows_in_the_docs_are_its_results_file():
    """docs/benchmarks.md's suite rows (the two paths, the κ sweep, the refresh, memory, the constraint
    and how cost grows) state bench/results/suite.json's numbers, and name each section's commit."""
    from pathlib import Path

    d = _result("suite.json")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    paths, sweep = d["paths"], d["sweep"]
    for text in (
        f"reference path (plain autograd) **{paths['reference_steps_per_s']:.1f}**, fast path "
        f"**{paths['fast_steps_per_s']:.1f}**",
        f"| fast path / reference path | **{paths['speedup']:.2f}×** |",
        f"batched ensemble **{sweep['batched_over_one_run']:.2f}×** one run; one after another "
        f"{sweep['sequential_over_one_run']:.2f}× (batched is {sweep['batched_speedup_over_sequential']:.2f}× faster)",
        f"**{d['dashboard_refresh']['snapshot_ms']:.0f} ms** for the snapshot",
        f"{d['memory']['batch_256']['peak_rss_mb']:.0f} MB at batch 256, {d['memory']['batch_4096']['peak_rss_mb']:.0f} MB",
        *(f"| {v['generators']} | {v['reference_ms']:.1f} | {v['per_generator_ms']:.1f} | **{v['fast_ms']:.1f}** |"
          for v in d["constraint"].values()),
        " / ".join(f"{v:.1f}" for v in d["scaling"]["width"].values()),
    ):  # fmt: skip
        assert text in docs, text
    assert all(f"commit `{c}`" in docs for c in d["commit"].split(", "))


def test_the_figure_2a_table_and_its_headline_are_its_results_file():
    """docs/results.md's Figure 2A table is bench.fig2a's Markdown of bench/results/fig2a_warm.json, and
    the README's headline quotes the file: each seed paired, as the table and the claims say."""
    from pathlib import Path

    from bench.fig2a import markdown
    from ehflow_core.sweep_tables import mean_interval

    result = _result("fig2a_warm.json")
    assert _generated("results.md", "bench.fig2a.markdown") == markdown(result)
    assert _cites("results.md", result)
    rows = result["rows"]

    def by_seed(regime: str, run: str, key: str = "test_log_likelihood") -> dict[int, float]:
        return {r["seed"]: r[key] for r in rows if r["regime"] == regime and r["run"] == run}

    def paired(regime: str, run: str) -> list[float]:
        none = by_seed(regime, "none")
        return [value - none[seed] for seed, value in by_seed(regime, run).items()]

    for run in ("κ=0.01", "κ=0.001", "exact"):  # "beat the unconstrained flow ... in every seed"
        assert len(paired("finite", run)) == 5 and min(paired("finite", run)) > 0, run
    assert sum(d < 0 for d in paired("infinite", "κ=0.001")) == 5 and min(paired("infinite", "exact")) > 0
    assert min(by_seed("finite", "exact", "gap_nats").values()) == pytest.approx(-0.027, abs=5e-4)
    level = mean_interval(paired("infinite", "κ=0.01"))["ci95"]  # "level": the paired interval holds zero
    assert level[0] < 0 < level[1]
    ratios = [r["constraint"] / float(r["run"][2:]) for r in rows if r["run"].startswith("κ=")]
    assert f"{max(ratios):.2f}" == "1.31" and sum(x < 1 for x in ratios) == 17  # "at most 1.31 times", "17 of 20"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("| Figure 2A, 200 training points"))
    helped = mean_interval(paired("finite", "κ=0.01"))
    low, high = helped["ci95"]
    assert f"by {helped['mean']:.3f} nats [{low:.3f}, {high:.3f}]" in line
    line = next(x for x in readme.splitlines() if x.startswith("| Figure 2A, infinite data?"))
    none_gap = statistics.fmean(by_seed("infinite", "none", "gap_nats").values())
    worse = -statistics.fmean(paired("infinite", "κ=0.001"))
    exact = statistics.fmean(by_seed("infinite", "exact", "gap_nats").values())
    soft = statistics.fmean(by_seed("infinite", "κ=0.01", "gap_nats").values())
    assert f"no constraint {none_gap:.3f}, κ = 0.01 level at {soft:.3f}, κ = 0.001 worse by {worse:.3f}" in line
    assert f"({exact:.3f} ± " in line


def test_the_sweep_table_is_generated_from_its_results_file():
    """docs/benchmarks.md's sweep table and batching sentence are bench.sweep.markdown of bench/results/sweep.json."""
    from bench.sweep import markdown

    result = _result("sweep.json")
    assert _generated("benchmarks.md", "bench.sweep.markdown") == markdown(result)
    assert _cites("benchmarks.md", result)


def test_the_figure_2b_table_is_generated_from_its_results_files():
    """docs/results.md's Figure 2B table is bench.fig2b.markdown of its five files (a convex or an MLP
    K, the library's defaults of two commits or the earlier Figure 2B training), each cited with its commit; the
    prose's comparison of the two trainings with the convex K holds seed by seed, and its count of
    the command line's runs with a well at all 8 modes is the file's."""
    import re
    from pathlib import Path

    from bench.fig2b import markdown

    names = ("fig2b_warm.json", "fig2b_defaults_convex.json", "fig2b.json", "fig2b_mlp.json", "fig2b_defaults.json")
    files = [_result(name) for name in names]
    assert _generated("results.md", "bench.fig2b.markdown") == markdown(*files)
    assert all(_cites("results.md", result) for result in files)
    defaults, earlier = ({row["seed"]: row for row in result["rows"]} for result in (files[0], files[2]))
    assert all(defaults[seed]["gap_nats"] < row["gap_nats"] for seed, row in earlier.items())
    assert all(row["attractors"]["wells_are"] == "minima of U" for result in files[:3] for row in result["rows"])
    all_eight = sum(row["attractors"]["modes_with_minimum"] == 8 for row in defaults.values())
    text = (Path(__file__).resolve().parents[1] / "docs" / "results.md").read_text()
    assert re.search(rf"all 8 modes in {all_eight} of {len(defaults)} seeds", text)


def test_the_dashboard_on_rays_paragraph_is_its_results_file():
    """docs/benchmarks.md's paragraph on the dashboard with its runs on Ray states bench/results/dashboard_ray.json."""
    from pathlib import Path

    d = _result("dashboard_ray.json")
    docs = (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md").read_text()
    text = " ".join(docs.split("**The same page with its runs on Ray**", 1)[1].split("\n\n", 1)[0].split())
    rss = [mb for _, mb in d["server_rss_mb"]]
    for stated in (
        f"commit `{d['commit']}`", f"usable page {d['usable_page_s']:.1f} s",
        f"first chart {d['train_to_first_chart_s']:.2f} s", f"{min(d['refreshes_per_s']):.2f}–{max(d['refreshes_per_s']):.2f}",
        f"{min(d['slider_effect_s']):.2f}–{max(d['slider_effect_s']):.2f} s", f"{d['streaming_steps_per_s']:.1f} steps/s",
        f"{d['headless_steps_per_s']:.1f} headless", f"({100 * d['streaming_share_of_headless']:.0f} %)",
        f"RSS {min(rss):.0f}–{max(rss):.0f} MB",
    ):  # fmt: skip
        assert stated in text, stated


def test_the_figure_2b_presets_table_is_generated_from_its_results_file():
    """docs/results.md's table of the dashboard's Figure 2B preset at 60 s is bench.fig2b_preset.markdown of its file."""
    from bench.fig2b_preset import markdown

    result = _result("fig2b_preset.json")
    assert _generated("results.md", "bench.fig2b_preset.markdown") == markdown(result)
    assert _cites("results.md", result)
    rows = result["rows"]
    eight = sum(r["modes_with_minimum"] == 8 and r["wells_are"] == "minima of U" for r in rows)
    assert (
        f"**met in all {eight} seeds**"
        in Path(__file__).resolve().parents[1].joinpath("docs", "results.md").read_text()
    )
    assert eight == len(rows) >= 5
