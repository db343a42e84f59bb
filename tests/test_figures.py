"""Snapshots and figures: the data behind the pictures is right (tests compare data, not images)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import plotly.colors as pc
import plotly.graph_objects as go
import pytest
import torch
from conftest import make_flow

from ehflow_core.figures import (
    TRAJECTORY_PIXELS,
    constraint_figure,
    constraint_spec,
    curves_figure,
    curves_spec,
    density_figure,
    density_spec,
    energy_figure,
    energy_spec,
    spec_json,
    trajectory_figure,
    trajectory_spec,
)
from ehflow_core.raster import heatmap_png
from ehflow_core.snapshot import (
    Snapshot,
    SnapshotConfig,
    attractor_report,
    kde_on_grid,
    potential_minima,
    take_snapshot,
)
from ehflow_core.targets import make_target
from ehflow_core.training import Record, TrainConfig


def test_potential_minima_finds_the_wells_of_a_known_potential():
    xs = np.linspace(-3, 3, 61)
    xx, yy = np.meshgrid(xs, xs)
    wells = np.array([[-1.5, 0.0], [1.5, 0.0], [0.0, 2.0]])
    u = -sum(np.exp(-((xx - a) ** 2 + (yy - b) ** 2) / 0.2) for a, b in wells)
    found = potential_minima(u, xs)
    assert len(found) == 3
    assert np.allclose(sorted(map(tuple, found)), sorted(map(tuple, wells)), atol=0.11)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_attractor_report_counts_modes_with_wells_and_concentration(sign):
    xs = np.linspace(-3, 3, 61)
    xx, yy = np.meshgrid(xs, xs)
    modes = np.array([[-1.5, 0.0], [1.5, 0.0]])
    u = -sum(np.exp(-((xx - a) ** 2 + (yy - b) ** 2) / 0.2) for a, b in modes)
    bowl = 0.5 * (xx**2 + yy**2)
    rng = np.random.default_rng(0)
    start = rng.uniform(-3, 3, size=(1, 200, 2))
    end = modes[rng.integers(0, 2, 200)][None] + 0.05 * rng.normal(size=(1, 200, 2))
    paths = np.concatenate([start, end])
    empty = np.zeros((2, 2))
    # (K, U) and (−K, −U) are the same dynamics reversed in time: the wells are found either way.
    snap = Snapshot(xs, empty, empty, sign * bowl, sign * u, paths, paths, empty, empty, None)
    report = attractor_report(snap, modes)
    assert report["wells_are"].startswith("minima" if sign > 0 else "maxima")
    assert report["modes_with_minimum"] == 2 and report["mean_mode_to_minimum"] < 0.1
    assert report["share_near_modes_flow"] == 1.0 and report["share_near_modes_base"] < 0.2


def test_kde_integrates_to_about_one_and_peaks_at_the_data():
    xs = np.linspace(-4, 4, 81)
    samples = np.random.default_rng(0).normal(loc=[1.0, -1.0], scale=0.3, size=(500, 2))
    kde = kde_on_grid(samples, xs, 0.2)
    assert kde.sum() * (xs[1] - xs[0]) ** 2 == pytest.approx(1.0, abs=0.01)
    iy, ix = np.unravel_index(kde.argmax(), kde.shape)
    assert abs(xs[ix] - 1.0) < 0.2 and abs(xs[iy] + 1.0) < 0.2


def test_snapshot_shapes_and_energies_match_the_flow():
    flow = make_flow(shared_hamiltonian=True)  # one H: the integrated flow runs for integrated_steps
    config = SnapshotConfig(
        grid=20, n_samples=200, n_paths=30, integrated_steps=7, log_density=True, log_density_samples=4
    )
    snap = take_snapshot(flow, make_target("ring"), config)
    assert snap.target_kde.shape == snap.model_kde.shape == snap.potential.shape == snap.log_density.shape == (20, 20)
    assert snap.single_step.shape == (2, 30, 2) and snap.integrated.shape == (8, 30, 2)
    per_step = take_snapshot(make_flow(shared_hamiltonian=False), make_target("ring"), config)
    assert per_step.integrated.shape == (3, 30, 2)  # a H per step: the trained flow's 2 steps only
    titles = [[a["text"] for a in trajectory_spec(s)["layout"]["annotations"]][1] for s in (snap, per_step)]
    assert titles == ["integrated flow (7 steps)", "the flow's leapfrog steps (2 steps)"]  # each panel says which
    # Grid layout [y, x]: U at row 3, column 5 is U(xs[5], xs[3]).
    point = torch.tensor([[snap.xs[5], snap.xs[3]]], dtype=torch.float64)
    with torch.no_grad():
        assert snap.potential[3, 5] == pytest.approx(float(flow.potential(point)))


def test_figures_hold_one_trace_per_panel_and_run():
    flow = make_flow()
    snap = take_snapshot(
        flow, make_target("ring"), SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    )
    assert len(density_figure(snap).data) == 2 and len(energy_figure(snap).data) == 2
    assert len(trajectory_figure(snap).data) == 8  # per panel: U, starts, paths, ends
    records = [
        Record(step=s, seconds=0.0, steps_per_s=1.0, train_bound=-3.0, loss=3.0, grad_norm=1.0,
               constraint={"L_12": 0.1}, lam={"L_12": 1.0}, kappa=0.01,
               test_log_likelihood=-2.9 if s % 2 == 0 else None)
        for s in range(1, 11)
    ]  # fmt: skip
    curves = curves_figure({"a": records, "b": records}, **TrainConfig().estimators)
    # no train_log_likelihood (infinite data): the dashed curve is the batches' training bound, and says so
    assert [t.name for t in curves.data] == [
        "a test L_32",
        "a train L_8 (batches)",
        "b test L_32",
        "b train L_8 (batches)",
    ]
    assert list(curves.data[0].x) == [2, 4, 6, 8, 10]
    assert len(constraint_figure(records).data) == 2
    paper = curves_figure({"a": records}, **TrainConfig().as_paper().estimators)
    assert [t.name for t in paper.data] == ["test L_32", "train ELBO (batches)"]  # one run: named for its estimators
    # finite data: the same estimator on training and test points, like for like
    finite = [dataclasses.replace(r, train_log_likelihood=r.test_log_likelihood) for r in records]
    assert [t.name for t in curves_figure({"a": finite}, k=16).data] == ["test L_16", "train L_16"]


def test_specs_are_valid_plotly_and_json_the_browser_can_read():
    snap = take_snapshot(
        make_flow(), make_target("ring"), SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    )
    records = [
        Record(step=s, seconds=0.0, steps_per_s=1.0, train_bound=-3.0, loss=3.0, grad_norm=1.0,
               constraint={"L_12": 0.1}, lam={"L_12": 1.0}, kappa=0.01, test_log_likelihood=-2.9)
        for s in range(1, 6)
    ]  # fmt: skip
    specs = [density_spec(snap), energy_spec(snap), trajectory_spec(snap), curves_spec({"a": records})]
    specs.append(constraint_spec(records))
    for spec in specs:
        go.Figure(spec)  # validates every property: raises on a misspelt one
        sent = json.loads(spec_json(spec))
        assert len(sent["data"]) == len(spec["data"]) and sent["layout"]["title"]["text"]
    paths = json.loads(spec_json(specs[2]))["data"]
    assert [t.get("xaxis") for t in paths] == ["x"] * 4 + ["x2"] * 4  # one panel per flow length
    # Float arrays travel as base64 float32 typed arrays, except those with NaN: the break between
    # two paths must arrive as null, which plotly.js draws as a gap (a NaN in a typed array is not).
    x = paths[2]["x"]
    assert isinstance(x, list) and x.count(None) == 5  # one break after each of the 5 paths
    np.testing.assert_allclose(x[:2], snap.single_step[:, 0, 0], atol=1e-4)
    assert x[2] is None
    heat = json.loads(spec_json(specs[1]))["data"][1]["z"]
    z = np.frombuffer(base64.b64decode(heat["bdata"]), dtype="<f4").reshape(10, 10)
    assert heat["shape"] == "10, 10"
    np.testing.assert_allclose(z, snap.potential, rtol=1e-6)
    assert specs[4]["layout"]["shapes"][0]["y0"] == 0.01  # the κ line
    assert specs[4]["layout"]["yaxis"]["type"] == "log"


def test_kde_equals_scikit_learns_kernel_density():
    from sklearn.neighbors import KernelDensity

    xs = np.linspace(-4, 4, 41)
    samples = np.random.default_rng(1).normal(size=(300, 2))
    xx, yy = np.meshgrid(xs, xs)
    reference = KernelDensity(kernel="gaussian", bandwidth=0.3).fit(samples)
    expected = np.exp(reference.score_samples(np.stack([xx.ravel(), yy.ravel()], 1))).reshape(41, 41)
    assert np.allclose(kde_on_grid(samples, xs, 0.3), expected, rtol=1e-4, atol=1e-7)


def _decode_png(uri: str) -> np.ndarray:
    from PIL import Image  # Pillow comes with streamlit

    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGBA"))


def test_heatmap_png_colours_cells_like_plotly_and_puts_the_largest_y_on_top():
    z = np.arange(12, dtype=np.float64).reshape(3, 4)  # [y, x]: the largest values in the last row
    z[0, 0] = np.nan
    rgba = _decode_png(heatmap_png(z, "Viridis"))
    assert rgba.shape == (3, 4, 4)
    viridis = pc.get_colorscale("Viridis")
    lowest, highest = (np.array(pc.hex_to_rgb(viridis[i][1])) for i in (0, -1))
    np.testing.assert_array_equal(rgba[0, 3, :3], highest)  # z[2, 3], the maximum, top right
    np.testing.assert_array_equal(rgba[2, 1, :3], lowest)  # z[0, 1], the minimum (NaN aside), bottom
    assert rgba[2, 0, 3] == 0 and (np.delete(rgba[..., 3].ravel(), 8) == 255).all()  # NaN: transparent
    # In between, the colour follows the scale: z = 6.5 is 6.5 / 11 of the way up.
    mid = _decode_png(heatmap_png(np.array([[1.0, 6.5, 12.0]]), [[0, "rgb(0,0,0)"], [1, "rgb(200,100,0)"]]))
    np.testing.assert_allclose(mid[0, 1, :3], np.array([200, 100, 0]) * 5.5 / 11, atol=1)


def test_raster_specs_draw_each_map_as_an_image_over_the_grid_cells():
    snap = take_snapshot(
        make_flow(), make_target("ring"), SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    )
    half = float(snap.xs[1] - snap.xs[0]) / 2
    for build, n_images in ((density_spec, 2), (energy_spec, 2), (trajectory_spec, 4)):
        plain, raster = build(snap), build(snap, raster=True)
        go.Figure(raster)  # valid plotly
        assert "images" not in plain["layout"]
        images = raster["layout"]["images"]
        assert len(images) == n_images and not any(t["type"] == "heatmap" for t in raster["data"])
        assert [t.get("xaxis") for t in raster["data"]] == ["x", "x2"]  # a placeholder keeps each panel's axes
        panels = ["x", "x2"] if n_images == 2 else ["x", "x", "x2", "x2"]  # trajectories: U, then the paths over it
        assert [im["xref"] for im in images] == panels
        layers = ["below"] * 2 if n_images == 2 else ["below", "above"] * 2  # one picture per layer and panel
        assert [im["layer"] for im in images] == layers
        for image in images:  # every picture covers the grid's cells
            assert image["x"] == pytest.approx(snap.xs[0] - half) and image["y"] == pytest.approx(snap.xs[-1] + half)
            assert image["sizex"] == image["sizey"] == pytest.approx(snap.xs[-1] - snap.xs[0] + 2 * half)
        assert _decode_png(images[0]["source"]).shape[:2] == (10, 10)  # maps: one pixel per cell
    paths = _decode_png(trajectory_spec(snap, raster=True)["layout"]["images"][3]["source"])
    assert paths.shape == (TRAJECTORY_PIXELS, TRAJECTORY_PIXELS, 4)  # paths need pixels
    potential = energy_spec(snap, raster=True)["layout"]["images"][1]["source"]
    np.testing.assert_array_equal(_decode_png(potential), _decode_png(heatmap_png(snap.potential, "Cividis")))


@pytest.mark.parametrize(
    "values, kind, labels",
    [
        ([1.0, 1.4, 2.4], "linear", None),  # λ within a decade: plotly's own linear ticks
        ([0.002, 0.01, 0.06], "log", ["0.002", "0.005", "0.01", "0.02", "0.05"]),
        ([1e-5, 3.0], "log", ["1e-05", "0.0001", "0.001", "0.01", "0.1", "1"]),  # decades only past 8 labels
    ],
)
def test_value_axes_have_several_full_labels_and_lambda_is_dashed(values, kind, labels):
    records = [
        Record(i, 0.1 * i, 10.0, -3.0, 3.0, 1.0, {"L_12": v}, {"L_12": v}, 0.01) for i, v in enumerate(values, 1)
    ]
    spec = constraint_spec(records)
    lam_axis = spec["layout"]["yaxis2"]
    assert lam_axis["type"] == kind
    if labels is not None:
        assert lam_axis["ticktext"] == labels and len(labels) >= 2
    dashes = [trace["line"]["dash"] for trace in spec["data"]]
    assert dashes == ["solid", "dash"]  # E[{g,H}²] and λ tell apart in the legend


def test_a_long_flow_is_drawn_as_end_points_with_fading_trails():
    """The attractor view: of a 30-step path only its last TRAIL steps are drawn, fading towards
    the past, its end and where it began; a short flow is drawn whole."""
    from ehflow_core.figures import TRAIL, trajectory_png

    xs = np.linspace(-4, 4, 41)
    t = np.arange(31, dtype=np.float64)
    paths = np.stack([-3.0 + 0.2 * t, np.zeros_like(t)], axis=1)[:, None, :]  # (31, 1, 2): x from -3 to 3
    alpha = _decode_png(trajectory_png(paths, xs, size=200))[..., 3].astype(float)
    column = lambda x: int(round((x + 4.1) / 8.2 * 200))  # noqa: E731  (pixel column of x)
    row = column(0.0)
    assert alpha[row - 3 : row + 4, column(-2.5) : column(1.0)].max() == 0  # steps before the trail: not drawn
    assert alpha[row, column(-3.0)] == 255  # the start, as a dot
    trail_start = -3.0 + 0.2 * (30 - TRAIL)
    faded, fresh = alpha[row, column(trail_start + 0.2)], alpha[row, column(2.8)]
    assert 0 < faded < fresh  # the trail fades towards the past
    assert alpha[row, column(3.0)] == 255  # the end point
    whole = _decode_png(trajectory_png(paths[:5], xs, size=200))[..., 3]
    assert whole[row, column(-2.9)] > 0  # a flow of few steps: drawn from its start


def test_the_constraint_panel_draws_the_kappa_in_force_and_names_the_generator():
    """κ moved twice: one dotted line, at the κ in force, labelled; the generator named as a
    reader knows it, not "L_12" (which reads like the bound L_K); both x axes say "step"."""
    kappas = [0.01] * 3 + [1e-3] * 3 + [3.16e-5] * 3
    records = [Record(i, 0.1 * i, 10.0, -3.0, 3.0, 1.0, {"L_12": 0.01}, {"L_12": 1.0}, k) for i, k in enumerate(kappas)]
    spec = constraint_spec(records)
    (line,) = spec["layout"]["shapes"]
    assert line["y0"] == line["y1"] == 3.16e-5 and line["label"]["text"] == "κ = 3.16e-05"
    assert [t["name"] for t in spec["data"]] == ["{g, H}², angular momentum g", "λ, angular momentum g"]
    assert spec["layout"]["xaxis"]["title"]["text"] == spec["layout"]["xaxis2"]["title"]["text"] == "step"
    from ehflow_core.figures import generator_label

    assert [generator_label(n, alone=False) for n in ("L_12", "L_1_12", "P_3")] == [
        "angular momentum g₁₂", "angular momentum g₁,₁₂", "momentum p₃",
    ]  # fmt: skip


def test_maps_carry_colour_bars_and_a_dome_shaped_k_is_said_on_the_u_panel():
    snap = take_snapshot(
        make_flow(), make_target("ring"), SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    )
    for raster in (False, True):
        bars = [t for t in energy_spec(snap, raster=raster)["data"] if t.get("showscale") or "marker" in t]
        assert len(bars) == 2, raster
    bowl = dataclasses.replace(snap, kinetic=np.add.outer(snap.xs**2, snap.xs**2))
    dome = dataclasses.replace(snap, kinetic=-bowl.kinetic)
    titles = lambda s: [a["text"] for a in energy_spec(s)["layout"]["annotations"]]  # noqa: E731
    assert "potential U(q)" in titles(bowl)
    assert "potential U(q): K is a dome, so U's maxima are the wells" in titles(dome)


def test_the_integrated_flow_is_drawn_while_its_points_are_in_view():
    """Points that flow off the map: the panel shows the steps before most of them left, and says so."""
    snap = take_snapshot(
        make_flow(), make_target("ring"), SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    )
    t = np.arange(31, dtype=np.float64)[:, None, None]
    # (31, 5, 2): x = 0.3 t leaves the map (x ≤ 4.44) at t = 15
    away = np.concatenate([0.3 * t, 0 * t], axis=-1).repeat(5, axis=1)
    spec = trajectory_spec(dataclasses.replace(snap, integrated=away, integrable=True))
    titles = [a["text"] for a in spec["layout"]["annotations"]]
    assert "integrated flow (14 of 30 steps: then most points leave the view): the last 8, fading" in titles


def test_a_sweeps_snapshot_draws_every_runs_density_and_potential_each_labelled():
    target = make_target("ring")
    flows = {"κ=0.001": make_flow(), "κ=0.01": make_flow(), "none": make_flow()}
    sizes = SnapshotConfig(grid=10, n_samples=100, n_paths=5, integrated_steps=3)
    snap = take_snapshot(flows["κ=0.01"], target, sizes, members=flows)
    assert [label for label, _, _ in snap.members] == list(flows)
    assert snap.members[1][1] is snap.model_kde  # the snapshot's own flow is not drawn twice
    titles = lambda spec: [a["text"] for a in spec["layout"]["annotations"]]  # noqa: E731
    assert titles(density_spec(snap)) == ["target (KDE)", "learned, κ=0.001", "learned, κ=0.01", "learned, none"]
    assert titles(energy_spec(snap)) == ["U(q), κ=0.001", "U(q), κ=0.01", "U(q), none"]
