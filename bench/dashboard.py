"""Dashboard benchmark: a real browser against `streamlit run`, measuring what a user feels.

    python -m bench.dashboard [--seconds 60] [--memory-seconds 600] [--out bench/results/dashboard.json]
    python -m bench.dashboard --ray ...   (the runs in Ray actors: a local Ray instance of 2 CPUs)

Measures: server launch → usable page (in a browser already open: the Train button and every
chart drawn); Train → the first chart of a snapshot taken after it; refreshes per second of each
live chart while training, and the browser's time per redraw; the share of samples in which every
chart is visible (non-blank); the feed's kB/s; slider → effect latency (the κ slider: until the page shows the
trainer using the new κ, and until the URL reflects it); training steps/s while streaming against
the same training headless (one torch thread, just before and just after the browser part);
memory (RSS) of the server and its training processes over a long run. Goals (issue "live
dashboard"): usable ≤ 8 s, first chart ≤ 2 s, ≥ 3 refreshes/s per chart, 100 % visible, slider
≤ 0.5 s, streaming ≥ 60 % of headless steps/s, memory flat after warm-up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.provenance import provenance, write_results
from dashboard.server import CHROMIUM_ARGS, serve

CHARTS_JS = "Array.from(document.querySelectorAll('div.ehflow-chart'))"


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the server and its training processes), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (the server and its training processes)."""
    total = 0.0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def headless_steps_per_s(seconds: float) -> float:
    """The dashboard's default training, without Streamlit, on one torch thread (as the server)."""
    import torch

    from dashboard.settings import Settings
    from ehflow_core.training import Trainer

    torch.set_num_threads(1)
    settings = Settings()
    trainer = Trainer(settings.train_config(), settings.make_target())
    list(trainer.train(more_steps=20))  # warm-up
    start, steps = time.perf_counter(), trainer.step
    for _ in trainer.train(seconds=seconds):
        pass
    return (trainer.step - steps) / (time.perf_counter() - start)


def run(seconds: float, memory_seconds: float, env: dict[str, str] | None = None) -> dict:
    from playwright.sync_api import sync_playwright

    result: dict = {}
    # Headless speed just before and just after the browser part: this shared machine's speed
    # drifted by up to 40 % within an hour, so one reading taken afterwards skewed the ratio.
    headless = [headless_steps_per_s(10)]
    with sync_playwright() as p:
        # The browser is open before the server starts, as a user's is: its own start-up (~3 s
        # here) is not the dashboard's.
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2300})
        launched = time.perf_counter()
        try:
            with serve(env=env) as server:
                page.goto(server.url)
                sidebar = page.get_by_test_id("stSidebarUserContent")
                # Usable: the Train button and every chart drawn (not just the charts' empty boxes).
                sidebar.get_by_role("button", name="Train", exact=True).wait_for(timeout=120_000)
                page.wait_for_function(
                    f"{CHARTS_JS}.length > 0 && {CHARTS_JS}.every(d => d.querySelector('.main-svg'))", timeout=120_000
                )
                result["usable_page_s"] = time.perf_counter() - launched

                # The first chart of a snapshot taken after Train (newer than every one drawn before).
                versions = f"{CHARTS_JS}.map(d => Number(d.dataset.version || 0))"
                shown = max(page.evaluate(versions))
                clicked = time.perf_counter()
                sidebar.get_by_role("button", name="Train", exact=True).click()
                while max(page.evaluate(versions)) <= shown:
                    page.wait_for_timeout(20)
                result["train_to_first_chart_s"] = time.perf_counter() - clicked

                # Refresh rate and visibility, sampled every 100 ms.
                step_value = page.get_by_test_id("ehflowMetric").filter(has=page.get_by_text("Step", exact=True))
                step_value = step_value.locator(".ehflow-metric-value")
                # A refresh is a redraw or, for the curves, an extension by their new points.
                refreshes = f"{CHARTS_JS}.map(d => Number(d.dataset.draws || 0) + Number(d.dataset.extends || 0))"
                before = page.evaluate(refreshes)
                start_step = int(step_value.inner_text().replace(",", ""))
                page.evaluate("performance.clearResourceTimings(); performance.setResourceTimingBufferSize(100000)")
                started, samples, visible = time.perf_counter(), 0, 0
                while time.perf_counter() - started < seconds:
                    heights = page.evaluate(f"{CHARTS_JS}.map(d => d.querySelector('.main-svg') ? d.offsetHeight : 0)")
                    samples += 1
                    visible += all(h > 50 for h in heights)
                    page.wait_for_timeout(100)
                elapsed = time.perf_counter() - started
                after = page.evaluate(refreshes)
                result["charts"] = page.evaluate(f"{CHARTS_JS}.map(d => d.dataset.key)")
                result["refreshes_per_s"] = [round((b - a) / elapsed, 2) for a, b in zip(before, after)]
                # Browser main-thread time per redraw (JSON.parse + Plotly.react), as the chart records it.
                ms = page.evaluate(
                    f"{CHARTS_JS}.map(d => Number(d.dataset.ms || 0) / Math.max(1, Number(d.dataset.draws || 0)))"
                )
                result["browser_ms_per_draw"] = [round(x, 1) for x in ms]
                # What the live panel downloads: its feed's answers (charts the page has drawn come
                # back as their hash, grown curves as their new points).
                sizes = page.evaluate(
                    "performance.getEntriesByType('resource').filter(e => e.name.includes('/api/live/'))"
                    ".map(e => e.decodedBodySize)"
                )
                result["feed_kb_per_s"] = round(sum(sizes) / 1000 / elapsed, 1)
                result["charts_visible_share"] = visible / max(samples, 1)
                # Mean training speed over the whole window, from the page's step counter.
                steps = int(step_value.inner_text().replace(",", "")) - start_step
                result["streaming_steps_per_s"] = round(steps / (time.perf_counter() - started), 1)

                # Slider latency: κ one notch right. Two moments: the page's URL changes (the rerun
                # reached the server and came back), and the page shows the trainer using the new κ
                # (the worker applied it and reported back): the effect a user sees.
                in_use = page.get_by_text("In use by the trainer now", exact=False)
                to_url, to_effect = [], []
                for key in ("ArrowRight", "ArrowLeft", "ArrowRight", "ArrowLeft", "ArrowRight"):
                    before_url, before_text = page.url, in_use.inner_text()
                    slider = sidebar.get_by_role("slider").first
                    slider.focus()
                    page.wait_for_timeout(300)
                    pressed = time.perf_counter()
                    slider.press(key)
                    url_at = None
                    while time.perf_counter() - pressed < 10:
                        if url_at is None and page.url != before_url:
                            url_at = time.perf_counter() - pressed
                        if in_use.inner_text() != before_text:
                            break
                        page.wait_for_timeout(10)
                    to_effect.append(time.perf_counter() - pressed)
                    to_url.append(url_at if url_at is not None else to_effect[-1])
                    page.wait_for_timeout(700)
                result["slider_to_url_s"] = [round(x, 3) for x in to_url]
                result["slider_effect_s"] = [round(x, 3) for x in to_effect]

                memory = []
                mem_start = time.perf_counter()
                while time.perf_counter() - mem_start < memory_seconds:
                    memory.append((round(time.perf_counter() - mem_start, 1), round(_rss_mb(server.pid), 1)))
                    page.wait_for_timeout(min(10_000, memory_seconds * 100))
                memory.append((round(time.perf_counter() - mem_start, 1), round(_rss_mb(server.pid), 1)))
                result["server_rss_mb"] = memory
        finally:
            browser.close()
    headless.append(headless_steps_per_s(10))
    result["headless_before_after"] = [round(x, 1) for x in headless]
    result["headless_steps_per_s"] = sum(headless) / 2
    result["streaming_share_of_headless"] = result["streaming_steps_per_s"] / result["headless_steps_per_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to sample refreshes")
    parser.add_argument("--memory-seconds", type=float, default=600.0, help="how long to watch memory")
    parser.add_argument("--out", help="default: bench/results/dashboard.json (dashboard_ray.json with --ray)")
    parser.add_argument(
        "--ray", action="store_true",
        help="start a local Ray instance (2 CPUs) and the server with EHFLOW_RAY_ADDRESS pointing at it: the runs "
        "train in Ray actors (the server's RSS then excludes them: they are the raylet's children)",
    )  # fmt: skip
    args = parser.parse_args()
    env = None
    if args.ray:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        env = {"EHFLOW_RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    result = {
        **provenance(
            "dashboard" + (" on Ray" if args.ray else ""), "bench.dashboard", machine="browser on the same cores"
        ),
        **run(args.seconds, args.memory_seconds, env),
    }
    out = Path(args.out or f"bench/results/dashboard{'_ray' if args.ray else ''}.json")
    for key, value in result.items():
        if key != "server_rss_mb":
            print(f"{key:>30}: {value}")
    rss = result["server_rss_mb"]
    print(f"{'server_rss_mb':>30}: {rss[0][1]} → {rss[len(rss) // 2][1]} → {rss[-1][1]} MB over {rss[-1][0]} s")
    write_results(out, result)


if __name__ == "__main__":
    main()
