"""The dashboard's settings: widgets and URL parameters to the core's configs, presets, bad values."""

from __future__ import annotations

import io
import re

import pytest
import torch

from bench.classroom import HOSTILE_VALUES, ODD_KEYS, as_query_dict, fuzz_csvs, fuzz_queries
from dashboard.settings import (
    DATA_TARGETS,
    DEFAULT_LOG10_LR,
    DRAW_LIMITS,
    LIMITS,
    PRESETS,
    UPLOAD_MAX_BYTES,
    Settings,
    code,
    read_drawing,
    read_upload,
    safe_name,
)
from ehflow_core.targets import DataTarget, make_target
from ehflow_core.training import TrainConfig, Trainer


def test_settings_map_to_the_core_configs():
    s = Settings(dt=0.75, n_steps=3, log10_kappa=-3.0, log10_lr=-3.0, batch=128, finite=True, n_train=300, seed=4)
    config = s.train_config()
    assert config.flow.dt == 0.75 and config.flow.n_steps == 3 and config.flow.base == "normal"
    assert config.kappa == pytest.approx(1e-3) and config.lr == pytest.approx(1e-3)
    assert config.batch == 128 and config.n_train == 300 and config.seed == 4
    assert Settings(generator_on=False).train_config().kappa is None
    assert Settings(finite=False).train_config().n_train is None
    soft = Settings(base="soft_uniform").train_config().flow
    assert (soft.base, soft.base_sigma, soft.base_beta) == ("soft_uniform", 3.0, 2.0)
    defaults, library = Settings().train_config(), TrainConfig()
    assert (defaults.objective, defaults.train_samples, defaults.flow.kinetic, defaults.flow.shared_hamiltonian) == (
        library.objective, library.train_samples, library.flow.kinetic, library.flow.shared_hamiltonian,
    )  # fmt: skip


def test_the_paper_preset_trains_the_papers_configuration_and_other_presets_restore_the_defaults():
    paper = Settings().with_preset("paper")
    config = paper.train_config()
    assert config == TrainConfig().as_paper().replace(
        flow=config.flow, kappa=config.kappa, lr=config.lr, max_steps=config.max_steps, eval_every=50, n_test=512,
        eval_samples=16,
    )  # fmt: skip
    assert config.objective == "elbo" and config.train_samples == 1 and config.batch == 256
    assert config.lr == pytest.approx(3e-4, rel=0.06)
    assert config.flow == TrainConfig().as_paper().flow
    again = paper.with_preset("fig2a")
    assert (again.log10_lr, again.batch) == (Settings().log10_lr, Settings().batch)
    assert again.train_config().objective == TrainConfig().objective


def test_presets_bring_their_target_base_and_generator():
    s = Settings().with_preset("fig2b")
    assert s.make_target().name == "gaussians8" and s.base == "soft_uniform" and not s.generator_on
    assert s.train_config().flow.shared_hamiltonian  # the integrated flow needs one H
    assert not Settings().train_config().flow.shared_hamiltonian  # the library's default elsewhere
    assert Settings().make_target().name == "ring" and Settings().kappa == pytest.approx(0.01)
    for name, preset in PRESETS.items():
        if preset.target not in DATA_TARGETS:
            assert Settings().with_preset(name).make_target().dim == 2
    with pytest.raises(ValueError, match="upload a CSV file"):
        Settings().with_preset("upload").make_target()
    with pytest.raises(ValueError, match="draw at least 20 points first"):
        Settings().with_preset("draw").make_target()
    drawn = DataTarget(torch.zeros(30, 2))
    assert Settings().with_preset("draw").make_target(drawn) is drawn


def test_each_preset_brings_its_learning_rate_and_kappa_and_a_reset_to_another_preset_replaces_them():
    # The page's rate is constant from the first step, below the library's peak (reached after a warm-up).
    assert Settings().log10_lr == DEFAULT_LOG10_LR and 10**DEFAULT_LOG10_LR == pytest.approx(3e-3, rel=0.06)
    config = Settings().train_config()
    assert (config.lr_schedule, config.warmup_steps, config.warmup_fraction) == ("constant", 0, 0.0)
    assert TrainConfig().lr > config.lr and TrainConfig().warmup_steps > 0
    for name, preset in PRESETS.items():
        chosen = Settings(log10_lr=-4.0).with_preset(name)
        assert chosen.log10_lr == preset.log10_lr and chosen.train_config().lr == pytest.approx(10**preset.log10_lr)
    assert PRESETS["core_and_ring"].log10_lr == PRESETS["grid9"].log10_lr == -3.0
    assert PRESETS["two_rings"].log10_lr == PRESETS["fig2b"].log10_lr == -2.5
    kappas = {name: Settings(log10_kappa=-4.0).with_preset(name).log10_kappa for name in PRESETS}
    assert kappas == {**{name: -2.0 for name in PRESETS}, "two_rings": -1.0}  # docs/presets.md


def test_presets_bring_their_kinetic_energy_and_figure_2b_is_the_command_lines():
    """Figure 2B trains a convex K (docs/presets.md); its model is the command line's FIG2B_FLOW;
    the paper's preset keeps the paper's MLP K; the others the library's."""
    from ehflow_core.experiments import FIG2B_FLOW

    kinetics = {name: Settings().with_preset(name).train_config().flow.kinetic for name in PRESETS}
    assert kinetics == {**{name: "mlp" for name in PRESETS}, "fig2b": "convex"}
    fig2b = Settings().with_preset("fig2b").train_config().flow
    assert {key: getattr(fig2b, key) for key in FIG2B_FLOW} == FIG2B_FLOW


PRESET_STEPS = 40  # training steps in the test below
PRESET_MARGIN = 0.05  # nats the test log-likelihood must rise by in PRESET_STEPS steps


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_learns_with_its_own_settings(name):
    """A preset's own configuration (objective, batch, learning rate, base, one or many H, its
    constraint) raises the test log-likelihood by PRESET_MARGIN in PRESET_STEPS steps. Tiny sizes:
    K and U of width 32, L_8 on 256 test points; the upload and drawing presets get 2,000 points of the ring."""
    settings = Settings().with_preset(name)
    ring_points = make_target("ring").sample(2000, torch.Generator().manual_seed(5))
    target = settings.make_target(DataTarget(ring_points, name=name) if PRESETS[name].target in DATA_TARGETS else None)
    config = settings.train_config().replace(n_test=256, eval_points=256, eval_samples=8)
    config = config.replace(flow=config.flow.replace(hidden=(32, 32)))
    generators = [g for g in target.generators() if g.has_action] if settings.generator_on else []
    trainer = Trainer(config, target, generators)
    before = trainer.evaluate()["test_log_likelihood"]
    records = list(trainer.train(more_steps=PRESET_STEPS))
    assert len(records) == PRESET_STEPS and all(r.event is None for r in records)
    after = trainer.evaluate()["test_log_likelihood"]
    assert after > before + PRESET_MARGIN, (name, before, after)


def test_query_round_trip_and_bad_values_fall_back_with_notices():
    s = Settings(dt=1.25, n_steps=4, finite=True, n_train=800, log10_kappa=-3.5, sweep=True)
    again, notices = Settings.from_query(s.to_query())
    assert again == s and notices == []
    bad, notices = Settings.from_query({"dt": "nan", "n_steps": "99", "preset": "nope", "finite": "maybe", "zzz": "1"})
    assert bad == Settings()
    assert len(notices) == 5
    assert any("`dt`=`nan`" in n for n in notices) and any("`n_steps`=`99`" in n and "[1, 8]" in n for n in notices)
    assert any("unknown URL parameter(s) ignored: `zzz`" in n for n in notices)


HOSTILE = {
    "batch": ["inf", "nan", "1e400", "-0", "48", "64.5", "9" * 500, ""],
    "seed": ["1e400", "-1e400", "1e30", "3.5", "0x10", "１"],
    "dt": ["inf", "-inf", "nan", "1e-400", "[a](http://x.example)", "<img src=x onerror=alert(1)>"],
    "preset": ["fig2c", "![i](http://x.example/i.png)", "`code`", "\n# heading"],
    "finite": ["yes", "2", ""],
    "[link](https://evil.example)": ["1"],
    "![img](https://evil.example/i.png)": ["1"],
    "www.evil.example": ["1"],
}


@pytest.mark.parametrize(
    "params", [{k: v} for k, values in HOSTILE.items() for v in values] + [{"batch": ["64", "128"]}, HOSTILE]
)
def test_hostile_url_values_fall_back_with_notices_that_render_no_markup(params):
    settings, notices = Settings.from_query(params)
    defaults = Settings()
    for name, value in vars(settings).items():
        if name not in params:
            assert value == getattr(defaults, name)
    for notice in notices:
        outside_code = re.sub(r"`[^`]*`", "", notice)  # user text is only ever inside code spans
        assert not re.search(r"\]\(|http|www\.|<|!\[|#", outside_code), notice
    if params == {"batch": ["64", "128"]}:  # a repeated key: the last value wins
        assert settings.batch == 128 and notices == []


def test_the_classroom_benchmarks_url_fuzz_falls_back_to_valid_settings_with_plain_notices():
    """The 200 generated parameter sets ``bench.classroom`` sends to the live server."""
    for pairs in fuzz_queries(200):
        for params in (dict(pairs), as_query_dict(pairs)):  # Streamlit's last value; every value
            settings, notices = Settings.from_query(params)
            settings.train_config()  # whatever came in, the settings are valid
            for name, (lo, hi) in LIMITS.items():
                assert lo <= getattr(settings, name) <= hi, (pairs, name)
            for notice in notices:
                spans = re.findall(r"`[^`]*`", notice)
                assert all(len(span) <= 42 for span in spans), notice  # names and values cut short
                outside_code = re.sub(r"`[^`]*`", "", notice)
                assert not re.search(r"\]\(|http|www\.|<|!\[|#|\$|:\w+\[", outside_code), (pairs, notice)


def test_user_text_is_shown_as_code_and_file_names_are_cleaned():
    """Markdown autolinks a URL even with its punctuation escaped (the classroom fuzz found one in
    an upload's error message), so text a user typed is only ever shown inside a code span."""
    for text in [*HOSTILE_VALUES, *ODD_KEYS, "row 3: '[x](https://evil.example/)' is not a number"]:
        shown = code(text, limit=300)
        assert shown.startswith("`") and shown.endswith("`") and shown.count("`") == 2, shown
        assert len(shown) <= 302 and "\n" not in shown
    assert safe_name("<a href='javascript:alert(1)'>x</a>.csv") == "_a href__javascript_alert_1___x__a_.csv"


class _Upload(io.BytesIO):
    """An uploaded file as the page gets it: bytes with a name and a size; counts what is read."""

    def __init__(self, name: str, content: bytes) -> None:
        super().__init__(content)
        self.name, self.size, self.bytes_read = name, len(content), 0

    def readinto(self, buffer) -> int:
        n = super().readinto(buffer)
        self.bytes_read += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self.bytes_read += len(data)
        return data


def test_the_classroom_benchmarks_csv_fuzz_is_read_or_rejected_with_a_reason():
    """The malformed files ``bench.classroom`` uploads to the live server: each is read into
    finite points within the limits or rejected with a short reason naming the file; a file over
    the size limit is not read at all, and one with too many rows is read only to the limit."""
    for name, content in fuzz_csvs(50):
        upload = _Upload(name, content)
        try:
            points = read_upload(upload)
        except ValueError as err:
            assert str(err).startswith(f"{name}: ") and len(str(err)) < 300, str(err)
            if len(content) > UPLOAD_MAX_BYTES:
                assert upload.bytes_read == 0
            elif name == "too_many_rows.csv":
                assert upload.bytes_read < len(content)  # stopped at the limit, not at the end
        else:
            assert points.shape[1] == 2 and 20 <= len(points) <= 50_000 and torch.isfinite(points).all(), name


def test_a_batch_off_the_slider_is_rejected_with_a_notice_not_silently_replaced():
    settings, notices = Settings.from_query({"batch": "48"})
    assert settings.batch == Settings().batch
    assert notices and "expected one of 32, 64, 128, 256, 512, 1024" in notices[0]


def test_a_sweep_needs_a_generator():
    """Without a constraint every κ of a sweep trains the same model: the sweep is off then."""
    assert Settings(sweep=True).sweeping
    off = Settings(sweep=True, generator_on=False)
    assert not off.sweeping and off.model_key() == Settings(generator_on=False).model_key()


def test_exact_symmetry_makes_the_energies_invariant_and_leaves_nothing_to_constrain():
    """The toggle builds K and U of |p|² and |q|² (a model change: Reset), drops κ and the κ sweep,
    and names the run "exact"; without the rotation generator it does nothing."""
    from ehflow_core import poisson_bracket, rotation_generator

    exact = Settings(exact=True, sweep=True)
    config = exact.train_config()
    assert config.flow.invariant_blocks == ((0, 1),) and config.kappa is None
    assert exact.exact_symmetry and not exact.sweeping and exact.primary_label() == "exact"
    assert exact.model_key() != Settings(sweep=True).model_key()  # needs a Reset
    assert Settings().primary_label() == "κ=0.01" and Settings(generator_on=False).primary_label() == "none"
    off = Settings(exact=True, generator_on=False)
    assert not off.exact_symmetry and off.train_config().flow.invariant_blocks is None
    assert off.model_key() == Settings(generator_on=False).model_key()
    again, notices = Settings.from_query(exact.to_query())
    assert again == exact and notices == [] and exact.to_query()["exact"] == "1"
    # What the toggle promises: {g, H} = 0 for every weight (float64, random weights and points).
    torch.manual_seed(0)
    trainer = Trainer(config.replace(flow=config.flow.replace(dtype="float64")), make_target("ring"))
    q, p = torch.randn(256, 2, dtype=torch.float64), torch.randn(256, 2, dtype=torch.float64)
    for h in trainer.flow.hamiltonians:
        assert poisson_bracket(rotation_generator(0, 1, 2), h, q, p).abs().max() < 1e-10


def test_model_key_separates_live_from_model_settings():
    s = Settings()
    assert s.model_key() == Settings(log10_kappa=-4.0, log10_lr=-3.0, generator_on=False).model_key()
    assert s.model_key() != Settings(dt=1.0).model_key()


def test_a_one_line_csv_of_millions_of_cells_is_refused_by_its_count_before_any_is_converted():
    """1.9 M cells on one line (3.8 MB): refused by the cell count, holding little more than the line."""
    import tracemalloc

    content = ("1," * 1_900_000).encode()[:-1] + b"\n"
    upload = _Upload("wide.csv", content)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"wide.csv: row 1: 1,900,000 cells; expected at most 2 columns"):
            read_upload(upload)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10e6, peak


def test_a_csv_with_a_byte_order_mark_loads():
    """Spreadsheet programs write UTF-8 with a byte-order mark before the header."""
    content = "\ufeffx,y\n".encode() + b"".join(f"{i},{-i}\n".encode() for i in range(30))
    points = read_upload(_Upload("excel.csv", content))
    assert points.shape == (30, 2) and points[1].tolist() == [1.0, -1.0]


def test_a_drawing_is_checked_as_an_upload_is_and_a_bad_one_says_why():
    good = [[0.5 * i / 30, -1.0 + i / 30] for i in range(30)]
    assert read_drawing(good).shape == (30, 2) and read_drawing(good).dtype == torch.float64
    cases = [
        (good[:5], "drawing: expected at least 20 rows, got 5"),
        ({"points": good}, "drawing: expected a list of \\[x, y\\] points, got dict"),
        ([[0, 0]] * (DRAW_LIMITS.max_rows + 1), "drawing: 2,001 points; at most 2,000"),
        (good[:25] + [["nan", 1.0]], "drawing: row 26"),
        (good[:25] + [[1.0, "x"]], "drawing: row 26: 'x' is not a number"),
        (good[:25] + [[1.0, 2.0, 3.0]], "drawing: row 26"),
    ]
    for points, message in cases:
        with pytest.raises(ValueError, match=message):
            read_drawing(points)


def test_a_downloaded_drawing_loads_back_through_the_upload():
    from dashboard.drawing import drawing_csv

    points = read_drawing([[0.1 * i, -0.05 * i + 0.0004] for i in range(40)])
    upload = _Upload("drawing.csv", drawing_csv(DataTarget(points)).encode())
    assert torch.allclose(read_upload(upload), points, atol=5e-4)  # the CSV keeps 3 decimals
