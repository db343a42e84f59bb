"""What each dashboard preset shows after 400 steps: the learned density beside the target's, as pictures.

    python -m bench.preset_pictures [--presets fig2a,two_rings,...] [--steps 400] [--seeds 0,1,2]
                                    [--out bench/results/preset_pictures.json] [--pictures assets/presets]

Each preset's configuration as the dashboard builds it (``Settings(seed=…).with_preset(name)``),
trained headless on one torch thread (as a dashboard training process trains it) for ``--steps``
steps, once per seed; then the dashboard's own pictures of each run (``dashboard.slot.VIEW_SIZES``: KDEs of 800
samples on a 60 × 60 grid): the target's density and the learned one side by side, as a PNG in
``--pictures``, and the test gap (L_256 on 2,048 fresh points minus the target's entropy), the
seconds it took, and for Figure 2B U's wells at the modes, in ``--out``. docs/presets.md shows
them (:func:`markdown`; a test holds the table equal to the file).
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.presets import PRESETS, gap_meter
from bench.provenance import markdown_table, provenance, write_results

SCALE = 2  # pixels per grid cell in the pictures
GAP = 4  # white pixels between the two panels


def picture(target_kde: np.ndarray, model_kde: np.ndarray) -> bytes:
    """The target's KDE and the learned one (each (n, n), [y, x]) side by side as PNG bytes, each
    coloured from its own minimum to its maximum (Viridis, as the dashboard's density panels)."""
    from ehflow_core.raster import colourise, png_data_uri

    panels = [
        np.kron(colourise(z, "Viridis")[::-1], np.ones((SCALE, SCALE, 1), dtype=np.uint8))
        for z in (target_kde, model_kde)
    ]
    gap = np.full((panels[0].shape[0], GAP, 4), 255, dtype=np.uint8)
    uri = png_data_uri(np.concatenate([panels[0], gap, panels[1]], axis=1))
    return base64.b64decode(uri.split(",", 1)[1])


def run(preset: str, steps: int, seed: int, pictures: Path) -> dict[str, Any]:
    """Train ``preset`` for ``steps`` steps; write its picture; return its row."""
    import torch

    from dashboard.settings import Settings
    from dashboard.slot import VIEW_SIZES
    from ehflow_core.snapshot import attractor_report, take_snapshot
    from ehflow_core.training import Trainer

    torch.set_num_threads(1)
    settings = Settings(seed=seed).with_preset(preset)
    config = settings.train_config()
    target = settings.make_target()
    trainer = Trainer(config.replace(max_steps=steps, eval_every=10**9, seconds=None), target)
    began = time.perf_counter()
    for _ in trainer.train():
        pass
    seconds = time.perf_counter() - began
    snapshot = take_snapshot(trainer.eval_flow, target, VIEW_SIZES, seed=seed)
    path = pictures / f"{preset}_{seed}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(picture(snapshot.target_kde, snapshot.model_kde))
    row: dict[str, Any] = {
        "preset": preset, "kinetic": config.flow.kinetic, "log10_lr": settings.log10_lr, "seed": seed,
        "steps": trainer.step, "seconds": round(seconds, 1), "gap_nats": gap_meter(target, seed)(trainer.eval_flow),
        "picture": path.as_posix(),
    }  # fmt: skip
    if preset == "fig2b":
        row.update(attractor_report(snapshot, np.asarray(target.centres)))
    print(json.dumps(row), flush=True)
    return row


def markdown(result: dict[str, Any], relative_to: str = "..") -> str:
    """The results file as a Markdown table, a row per preset: its seeds' gaps (and Figure 2B's
    wells), the mean seconds, and each seed's picture (target | learned; paths relative to docs/)."""
    seeds = sorted({r["seed"] for r in result["rows"]})
    head = ["preset", "K", "lr", "steps", "seconds (one thread, headless)", "gap (nats), by seed"]
    head += [f"seed {s}: target, learned" for s in seeds]
    by_preset: dict[str, list[dict[str, Any]]] = {}
    for r in result["rows"]:
        by_preset.setdefault(r["preset"], []).append(r)
    rows = []
    for preset, runs in by_preset.items():
        runs.sort(key=lambda r: r["seed"])
        gaps = []
        for r in runs:
            wells = ""
            if "modes_with_minimum" in r:
                kind = "minima" if r["wells_are"].startswith("minima") else "maxima"
                wells = f" (wells {r['modes_with_minimum']}/8, {kind})"
            gaps.append(f"{r['gap_nats']:.3f}{wells}")
        first = runs[0]
        rows.append([
            preset, first["kinetic"], f"10^{first['log10_lr']:g}", f"{first['steps']:,}",
            f"{sum(r['seconds'] for r in runs) / len(runs):.1f}", ", ".join(gaps),
            *(f"![{preset}, seed {r['seed']}, after {r['steps']} steps]({relative_to}/{r['picture']})" for r in runs),
        ])  # fmt: skip
    return markdown_table(head, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds: a run and a picture each")
    parser.add_argument("--out", default="bench/results/preset_pictures.json")
    parser.add_argument("--pictures", default="assets/presets")
    args = parser.parse_args(argv)
    # Before the runs: they write the pictures into the work tree, which is not a change of the code.
    here = provenance("preset_pictures", "bench.preset_pictures", argv, machine="one torch thread")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [run(p, args.steps, s, Path(args.pictures)) for p in args.presets.split(",") for s in seeds]
    result = {**here, "rows": rows}
    write_results(args.out, result)
    print(markdown(result))


if __name__ == "__main__":
    main()
