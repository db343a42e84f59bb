"""Targets: normalised densities, samplers consistent with them, symmetries, and user-data checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest, norm

from ehflow_core import rotation_generator
from ehflow_core.targets import TARGETS, DataLimits, DataTarget, load_points, make_target, parse_csv

TWO_D = [name for name in TARGETS if make_target(name).dim == 2]


def _grid(lo=-6.0, hi=6.0, n=400):  # even n: no node at the origin, where radial densities have an integrable spike
    xs = torch.linspace(lo, hi, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), (xs[1] - xs[0]).item() ** 2


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "two_moons" else n for n in TWO_D]
)  # two moons: a costly log-density
def test_2d_density_normalised_and_matches_its_samples(name):
    target = make_target(name)
    # The moons lie within ±2.6: their costly density on a grid of the same spacing over ±3.5.
    points, cell = _grid(-3.5, 3.5, 234) if name == "two_moons" else _grid()
    logp = target.log_prob(points)
    density = logp.exp()
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=2e-3)
    # Entropy by quadrature vs −mean log p over samples: equal only if the sampler draws from p.
    grid_entropy = float(-(density * torch.where(density > 0, logp, 0)).sum() * cell)
    mc_entropy, stderr = target.entropy(n_points=40_000, seed=1)
    assert mc_entropy == pytest.approx(grid_entropy, abs=5 * stderr + 2e-3)


def test_entropy_check_has_power():
    # A sampler with the wrong radius would be caught: compare the ring's density to shifted samples.
    ring = make_target("ring")
    x = ring.sample(20_000, torch.Generator().manual_seed(0), dtype=torch.float64) * 1.1
    assert float(-ring.log_prob(x).mean()) > ring.entropy()[0] + 0.1


def test_ring_radius_distribution():
    ring = make_target("ring")
    x = ring.sample(20_000, torch.Generator().manual_seed(2), dtype=torch.float64)
    assert kstest(x.norm(dim=1).numpy(), norm(loc=2.0, scale=0.25).cdf).pvalue > 1e-3
    angles = torch.atan2(x[:, 1], x[:, 0]).numpy()
    assert kstest(angles, lambda a: (a + math.pi) / (2 * math.pi)).pvalue > 1e-3


def test_shell3d_normalised_along_radius_and_so3_invariant():
    shell = make_target("shell3d")
    r = torch.linspace(1e-4, 6, 20001, dtype=torch.float64)
    ray = torch.stack([r, 0 * r, 0 * r], 1)
    mass = torch.trapezoid(4 * math.pi * r**2 * shell.log_prob(ray).exp(), r)
    assert float(mass) == pytest.approx(1.0, abs=1e-6)
    x = shell.sample(500, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert [g.name for g in shell.generators()] == ["L_12", "L_13", "L_23"]
    for g in shell.generators():
        assert torch.allclose(shell.log_prob(g.act(x, x, 0.9)[0]), shell.log_prob(x), atol=1e-10)


def test_rings4d_is_a_product_with_commuting_generators():
    target = make_target("rings4d")
    gens = target.generators()
    assert [g.name for g in gens] == ["L_12", "L_34"]
    x = target.sample(300, torch.Generator().manual_seed(4), dtype=torch.float64)
    ring = make_target("ring")
    assert torch.allclose(target.log_prob(x), ring.log_prob(x[:, :2]) + ring.log_prob(x[:, 2:]))
    for g in gens:
        assert torch.allclose(target.log_prob(g.act(x, x, 1.3)[0]), target.log_prob(x), atol=1e-10)
    # Mixing the two planes is not a symmetry.
    mixed = rotation_generator(0, 2, 4)
    assert (target.log_prob(mixed.act(x, x, 1.0)[0]) - target.log_prob(x)).abs().max() > 1.0


@pytest.mark.parametrize("name", ["ring", "two_rings", "core_and_ring"])
def test_radial_targets_are_rotation_invariant(name):
    target = make_target(name)
    x = target.sample(500, torch.Generator().manual_seed(5), dtype=torch.float64)
    (g,) = target.generators()
    assert torch.allclose(target.log_prob(g.act(x, x, 2.1)[0]), target.log_prob(x), atol=1e-10)


def test_multimodal_targets_have_no_continuous_symmetry_and_n_modes_is_configurable():
    assert make_target("gaussians8").generators() == []
    five = make_target("gaussians", n_modes=5)
    assert five.name == "gaussians5" and five.centres.shape == (5, 2)
    with pytest.raises(ValueError, match=r"target must be one of .*; got 'moon'"):
        make_target("moon")


def test_user_data_target_samples_its_rows():
    points = torch.randn(50, 3, dtype=torch.float64)
    target = DataTarget(points)
    x = target.sample(200, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert all(any(torch.equal(row, p) for p in points) for row in x[:10])
    assert not target.has_log_prob and len(target.generators()) == 3
    with pytest.raises(ValueError, match="has no exact density"):
        target.entropy()


def test_csv_with_header_and_npy_load(tmp_path):
    rows = "\n".join(f"{i * 0.1},{-i * 0.2}" for i in range(20))
    (tmp_path / "a.csv").write_text("x,y\n" + rows + "\n")
    pts = load_points(tmp_path / "a.csv")
    assert pts.shape == (20, 2) and pts[3].tolist() == pytest.approx([0.3, -0.6])
    np.save(tmp_path / "b.npy", np.ones((15, 3)))
    assert load_points(tmp_path / "b.npy").shape == (15, 3)


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"bad.csv: no numeric rows found"),
        ("x,y\n", r"bad.csv: no numeric rows found"),
        ("1,2\n3,abc\n" + "1,2\n" * 20, r"bad.csv: row 2: 'abc' is not a number"),
        ("1,2\n3,nan\n" + "1,2\n" * 20, r"bad.csv: row 2: holds a non-finite value"),
        ("1\n2\n3\n" * 10, r"bad.csv: expected at least 2 columns \(one per coordinate\), got 1"),
        ("1,2\n1,2,3\n", r"bad.csv: row 2: expected 2 columns like the first row, got 3"),
        ("1,2\n" * 3, r"bad.csv: expected at least 10 rows, got 3"),
        ("\x00\x07,\x01\n" + "1,2\n" * 20, r"bad.csv: row 1: .* is neither numbers nor a header of column names"),
        ("x,y,z\n" + "1,2\n" * 20, r"bad.csv: row 2: expected 3 columns like the header, got 2"),
    ],
)
def test_bad_csv_is_rejected_with_file_row_and_problem(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_points(path)


def test_bad_files_are_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"missing.csv: no such file"):
        load_points(tmp_path / "missing.csv")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match=r"expected a .csv or .npy file, got '.json'"):
        load_points(tmp_path / "x.json")
    np.save(tmp_path / "cube.npy", np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r"cube.npy: expected a 2-D array \(rows × columns\), got shape \(4, 4, 4\)"):
        load_points(tmp_path / "cube.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]] * 20))
    with pytest.raises(ValueError, match=r"text.npy: expected a numeric array"):
        load_points(tmp_path / "text.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"junk.npy: not a readable .npy array"):
        load_points(tmp_path / "junk.npy")
    np.save(tmp_path / "inf.npy", np.array([[0.0, 1.0]] * 12 + [[np.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"inf.npy: row 13 holds a non-finite value"):
        load_points(tmp_path / "inf.npy")


def test_too_many_rows_rejected():
    from ehflow_core.targets import DataLimits

    with pytest.raises(ValueError, match=r"upload: more than 50 rows"):
        parse_csv("1,2\n" * 60, "upload", DataLimits(max_rows=50))


MALFORMED_CSV = {
    "wrong columns": ("x,y\n1,2\n3,4,5\n", r"row 3: 3 cells; expected at most 2 columns"),
    "nan": ("1,2\nnan,4\n", r"row 2: holds a non-finite value"),
    "inf": ("1,2\n3,-inf\n", r"row 2: holds a non-finite value"),
    "binary": ("\x00\x01\x02PK\x03\x04,\x00\n\xff\xfe,\x00\n", r"row 1: .* is neither numbers nor a header"),
    "unicode": ("x,y\n" + "1,2\n３,４\n" * 10, ""),  # full-width digits: float() reads them
    "empty": ("", r"no numeric rows found"),
    "header only": ("x,y\n", r"no numeric rows found"),
    "one column": ("\n".join(["1"] * 30), r"expected at least 2 columns"),
    "huge cell": ("1,2\n" + "9" * 10 + "z" * 100_000 + ",1\n", r"row 2: 100,013 characters; a row has at most 128"),
    "long header": ("x" * 70 + ",y\n1,2\n", r"row 1: 'x+'… is neither numbers nor a header"),
}


@pytest.mark.parametrize("name", list(MALFORMED_CSV))
def test_malformed_csv_is_rejected_with_a_short_message(name):
    text, message = MALFORMED_CSV[name]
    if name == "unicode":  # float() accepts full-width digits: the file is valid
        assert parse_csv(text, "up.csv", DataLimits(min_rows=2, max_dim=2)).shape == (20, 2)
        return
    with pytest.raises(ValueError, match=message) as err:
        parse_csv(text, "up.csv", DataLimits(min_rows=2, max_dim=2))
    assert len(str(err.value)) < 200


def test_csv_parsing_stops_reading_at_the_row_limit_and_at_the_first_bad_row():
    read = []

    def lines(bad_at: int | None = None):
        for i in range(10**9):  # an endless file
            read.append(i)
            yield "oops,1\n" if i == bad_at else f"{i},1\n"

    with pytest.raises(ValueError, match="more than 50 rows"):
        parse_csv(lines(), "big.csv", DataLimits(max_rows=50))
    assert len(read) == 51
    read.clear()
    with pytest.raises(ValueError, match="row 8: 'oops' is not a number"):
        parse_csv(lines(bad_at=7), "bad.csv", DataLimits(max_rows=50))
    assert len(read) == 8
