"""Classroom benchmark: one dashboard server, N students' tabs in a real browser, then a fuzz.

    python -m bench.classroom [--sizes 4,12,20] [--seconds 20] [--urls 200] [--csvs 50]
                              [--mixes plain,teaching] [--browser-nice 19]
                              [--out bench/results/classroom.json] [--merge]

For each N: start the server (``streamlit run``, the pool at its defaults), open N tabs in one
Debian Chromium (Playwright), press Train in each, hide all but two (as students' tabs often
are), let them train ``--seconds``, then close every tab. Reported per N: server + training
processes' RSS (total, and per run above the idle server), processes, ``/_stcore/health`` latency
p50/p99 (probed every 100 ms) while training and while the tabs close, each admitted session's
steps/s (min/median/max, and min/median: fairness), runs waiting for a place, time from the tabs'
close to every run freed (``/api/pool``), and the Nth tab's time to its first chart.

``--mixes``: each size is measured once per mix. ``plain``: every tab trains the default
preset. ``teaching``: every tab trains with the peer on (an NSF beside the flow), and every other
tab first draws its data (two strokes on the drawing surface, then Train): the classroom with
the teaching tools in use. A drawing tab's time to its first chart counts from its Train.

Then the fuzz, against one live server: ``--urls`` generated URL parameter sets
(:func:`fuzz_queries`) and ``--csvs`` malformed CSV files (:func:`fuzz_csvs`: wrong columns,
NaN/inf, binary, 30 MB, unicode, empty, header only, ...). Counted: tracebacks, "Something went
wrong", links or images from the input rendered in the page, uploads that gave no answer; and the
server's RSS change across the 30 MB upload.

Goals (issue "serve a classroom"): 20 sessions with RSS ≤ 2 GB and ≤ cores + 1 training processes,
health p99 ≤ 250 ms, fairness ≥ 0.5, every run freed ≤ 30 s after its tab closed, fuzz all zeros,
30 MB upload ≤ +50 MB. The fuzz cases are also unit tests of the parsers (tests/test_settings.py,
tests/test_targets.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from dashboard.server import CHROMIUM_ARGS, serve

from .dashboard import CHARTS_JS, _rss_mb, process_tree
from .provenance import provenance

# Hides or shows a page as a browser does for a background tab (``document.hidden``).
SET_HIDDEN = """hidden => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event("visibilitychange"));
}"""
EVIL = "evil.example"  # every link or image the fuzz tries to inject points here

# -- the fuzz cases (also the parsers' unit tests) --------------------------------------------------
HOSTILE_VALUES = [
    "inf", "-inf", "nan", "NaN", "1e400", "-1e400", "1e-400", "0", "-1", "99999999999999999999", "0x10",
    "1_000", " 1", "", "true", "2.5", "-3.75", "1e3", "[x](https://evil.example/)",
    "![i](https://evil.example/i.png)", "<img src=https://evil.example/i.png>", "<script>alert(1)</script>",
    "**bold**", "`code`", "a" * 10_000, "ü∆😀", "\x00", "%00", "../../etc/passwd", "javascript:alert(1)",
    "<a href='https://evil.example/'>x</a>", "$$\\href{https://evil.example/}{x}$$", ":red[x]", "\n# title",
]  # fmt: skip
FIELDS = [
    "preset", "finite", "n_train", "base", "generator_on", "log10_kappa", "sweep", "dt", "n_steps", "log10_lr",
    "batch", "seed",
]  # fmt: skip
ODD_KEYS = ["evil", "[x](https://evil.example/)", "![i](https://evil.example/i.png)", "k" * 300, "😀", "<b>x</b>"]


def fuzz_queries(n: int = 200, seed: int = 0) -> list[list[tuple[str, str]]]:
    """``n`` URL parameter lists (a key may repeat): hostile values for real and unknown keys."""
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        pairs = []
        for _ in range(rng.randint(1, 5)):
            key = rng.choice(FIELDS) if rng.random() < 0.8 else rng.choice(ODD_KEYS)
            value = rng.choice(HOSTILE_VALUES) if rng.random() < 0.7 else f"{rng.uniform(-1e3, 1e3):.6g}"
            pairs.append((key, value))
            if rng.random() < 0.15:  # the same key again
                pairs.append((key, rng.choice(HOSTILE_VALUES)))
        cases.append(pairs if i else [(key, "1e400") for key in FIELDS])  # the first: every field at once
    return cases


def as_query_dict(pairs: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """``pairs`` as the page receives them from Streamlit: a repeated key's values as a list."""
    out: dict[str, str | list[str]] = {}
    for key, value in pairs:
        if key in out:
            previous = out[key]
            out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[key] = value
    return out


def fuzz_csvs(n: int = 50, seed: int = 0, big_mb: int = 30) -> list[tuple[str, bytes]]:
    """At least ``n`` malformed (or borderline) CSV files as (name, bytes), one of ``big_mb`` MB."""
    rng = random.Random(seed)
    good = "".join(f"{rng.gauss(0, 1):.4f},{rng.gauss(0, 1):.4f}\n" for _ in range(40))
    fixed: list[tuple[str, bytes]] = [
        ("empty.csv", b""),
        ("header_only.csv", b"x,y\n"),
        ("one_column.csv", "".join(f"{i}\n" for i in range(40)).encode()),
        ("three_columns.csv", "".join(f"{i},{i},{i}\n" for i in range(40)).encode()),
        ("nan.csv", (good + "nan,1\n").encode()),
        ("inf.csv", ("inf,1\n" + good).encode()),
        ("overflow.csv", ("1e400,1\n" + good).encode()),
        ("binary.csv", bytes(rng.getrandbits(8) for _ in range(4096))),
        ("nul_bytes.csv", good.encode().replace(b"\n", b"\x00\n")),
        ("unicode.csv", ("x,y\n" + good.replace("0", "٠")).encode()),
        ("emoji.csv", ("😀,😀\n" + good).encode()),
        ("latin1.csv", ("é,ü\n" + good).encode("latin-1")),
        ("utf16.csv", good.encode("utf-16")),
        ("bom.csv", ("\ufeff" + good).encode()),
        ("semicolons.csv", good.replace(",", ";").encode()),
        ("tabs.csv", good.replace(",", "\t").encode()),
        ("crlf.csv", good.replace("\n", "\r\n").encode()),
        ("quoted.csv", "".join(f'"{i}","{i}"\n' for i in range(40)).encode()),
        ("trailing_commas.csv", good.replace("\n", ",\n").encode()),
        ("too_few_rows.csv", b"1,2\n3,4\n"),
        ("too_many_rows.csv", b"1,2\n" * 60_000),
        ("one_long_line.csv", b"1," * 500_000 + b"1\n"),
        ("markdown.csv", ("[x](https://evil.example/),![i](https://evil.example/i.png)\n" + good).encode()),
        ("markdown_row.csv", (good + "[x](https://evil.example/),![i](https://evil.example/i.png)\n").encode()),
        ("[x](https:__evil.example_) :red[y].csv", good.encode()),  # a hostile name on a good file
        ("html.csv", ("<img src=https://evil.example/i.png>,<script>alert(1)</script>\n" + good).encode()),
        ("huge_number.csv", ("9" * 5000 + ",1\n" + good).encode()),
        ("blank_lines.csv", ("\n\n\n" + good + "\n\n").encode()),
        ("spaces.csv", good.replace(",", " , ").encode()),
        ("big.csv", b"1.0,2.0\n" * (big_mb * 1_000_000 // 8)),
    ]
    cases = list(fixed)
    while len(cases) < n:  # good rows with one random defect somewhere
        lines = good.splitlines()
        at = rng.randrange(len(lines))
        lines[at] = rng.choice(["a,b", "1", "1,2,3", "nan,nan", "-inf,0", ",", "1,,", "0x1,2", "\x00,1", "1e999,0"])
        cases.append((f"defect_{len(cases)}.csv", ("\n".join(lines) + "\n").encode()))
    return cases


# -- measuring ----------------------------------------------------------------------------------------
class HealthProbe:
    """``/_stcore/health`` every ``every`` seconds in a thread; latencies tagged with the phase."""

    def __init__(self, url: str, every: float = 0.1) -> None:
        self.url, self.every, self.phase = f"{url}/_stcore/health", every, "idle"
        self.samples: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)
        self._thread.start()

    def _probe(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            try:
                urllib.request.urlopen(self.url, timeout=10).read()
                latency = time.perf_counter() - began
            except OSError:
                latency = math.inf
            self.samples.append((self.phase, latency))
            self._stop.wait(max(0.0, self.every - latency))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def summary(self, phase: str) -> dict:
        ms = sorted(1000 * x for p, x in self.samples if p == phase)
        if not ms:
            return {}
        return {"n": len(ms), "p50_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1)}


def _pool(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/api/pool", timeout=10).read())


def _metric(page, label: str) -> str:
    metric = page.get_by_test_id("ehflowMetric").filter(has=page.get_by_text(label, exact=True))
    return metric.locator(".ehflow-metric-value").inner_text(timeout=30_000)


def _step(page) -> int:
    return int(_metric(page, "Step").replace(",", ""))


MIXES = ("plain", "teaching")


def classroom(browser, n: int, seconds: float, mix: str = "plain") -> dict:
    """One server, ``n`` tabs of a ``mix`` (``MIXES``): see the module's docstring."""
    from .screenshot import draw_two_strokes

    with serve() as server:
        probe = HealthProbe(server.url)
        deadline = time.monotonic() + 60
        while not _pool(server.url)["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)  # the first process's warm-up
        idle_rss = _rss_mb(server.pid)
        probe.phase = "opening"
        pages, first_chart = [], []
        for i in range(n):
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            drawing = mix == "teaching" and i % 2 == 1
            opened = time.perf_counter()
            page.goto(server.url + ("" if mix == "plain" else "/?peer=1" + ("&preset=draw" if drawing else "")))
            train = page.get_by_test_id("stSidebarUserContent").get_by_role("button", name="Train", exact=True)
            if drawing:  # no chart before there are data: draw, Train, and time the first chart from there
                draw_two_strokes(page)
                page.get_by_text("In use:").wait_for(timeout=180_000)
                opened = time.perf_counter()
                train.click()
            train.wait_for(timeout=180_000)
            page.wait_for_function(f"{CHARTS_JS}.some(d => Number(d.dataset.draws || 0) > 0)", timeout=180_000)
            first_chart.append(time.perf_counter() - opened)
            if not drawing:
                train.click()
            if i >= 2:
                page.evaluate(SET_HIDDEN, True)
            pages.append(page)
        probe.phase = "training"
        time.sleep(3)
        start = [(_step(p), _metric(p, "State"), time.perf_counter()) for p in pages]
        time.sleep(seconds)
        end = [(_step(p), _metric(p, "State"), time.perf_counter()) for p in pages]
        rss = _rss_mb(server.pid)
        processes = len(process_tree(server.pid))
        pool = _pool(server.url)
        rates = [
            (s1 - s0) / (t1 - t0)
            for (s0, state0, t0), (s1, state1, t1) in zip(start, end)
            if state0 == state1 == "training"
        ]
        waiting = sum(state == "queued" for _, state, _ in end)
        probe.phase = "closing"
        closed = time.perf_counter()
        for page in pages:
            page.close()
        freed = math.inf
        while time.perf_counter() - closed < 90:
            if _pool(server.url)["runs"] == 0:
                freed = time.perf_counter() - closed
                break
            time.sleep(0.25)
        time.sleep(1)
        probe.stop()
        median = statistics.median(rates) if rates else 0.0
        return {
            "sessions": n,
            "mix": mix,
            "rss_mb": round(rss, 1),
            "idle_rss_mb": round(idle_rss, 1),
            "rss_per_run_mb": round((rss - idle_rss) / n, 1),
            "processes": processes,
            "training_processes": processes - 1,
            "pool": pool,
            "health_training": probe.summary("training"),
            "health_opening": probe.summary("opening"),
            "health_closing": probe.summary("closing"),
            "admitted": len(rates),
            "waiting": waiting,
            "steps_per_s": {
                "min": round(min(rates, default=0.0), 1),
                "median": round(median, 1),
                "max": round(max(rates, default=0.0), 1),
            },
            "fairness_min_over_median": round(min(rates) / median, 2) if rates and median else None,
            "freed_after_close_s": round(freed, 1),
            "first_chart_s_first_and_last": [round(first_chart[0], 2), round(first_chart[-1], 2)],
        }


def _page_problems(page) -> dict[str, int]:
    """What must never show: a traceback, the page's catch-all error, links or images from input."""
    return {
        "tracebacks": page.get_by_test_id("stException").count(),
        "something_went_wrong": page.get_by_text("Something went wrong").count(),
        "injected": page.locator(f'a[href*="{EVIL}"], img[src*="{EVIL}"], a[href^="javascript"]').count(),
    }


def fuzz(browser, n_urls: int, n_csvs: int) -> dict:
    """The URL and upload fuzz against one live server."""
    totals = {"tracebacks": 0, "something_went_wrong": 0, "injected": 0, "no_page": 0, "no_answer": 0}
    failures: list[str] = []
    big_rss: list[float] = []
    with serve() as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        sidebar = page.get_by_test_id("stSidebarUserContent")
        began = time.perf_counter()
        for pairs in fuzz_queries(n_urls):
            page.goto(f"{server.url}/?{urllib.parse.urlencode(pairs)}")
            try:
                sidebar.get_by_role("button", name="Reset", exact=True).wait_for(timeout=60_000)
                page.wait_for_timeout(200)
            except Exception:
                totals["no_page"] += 1
                failures.append(f"no page: {pairs!r:.200}")
            for key, count in _page_problems(page).items():
                totals[key] += count
                if count:
                    failures.append(f"{key}: {pairs!r:.200}")
        urls_s = time.perf_counter() - began
        page.goto(f"{server.url}/?preset=upload")
        chooser = page.locator("input[type=file]")
        chooser.wait_for(state="attached", timeout=60_000)
        began = time.perf_counter()
        for name, content in fuzz_csvs(n_csvs):
            before = _rss_mb(server.pid) if name == "big.csv" else 0.0
            chooser.set_input_files(files=[{"name": name, "mimeType": "text/csv", "buffer": content}])
            # The page's answer names the file; the uploader itself rejects a file over its limit.
            answer = sidebar.locator(f'[data-testid="stAlert"]:has-text("{name}")').or_(
                page.get_by_test_id("stFileChipIconError")
            )
            try:
                answer.first.wait_for(timeout=30_000)
            except Exception:
                totals["no_answer"] += 1
                failures.append(f"no answer: {name}")
            if name == "big.csv":
                page.wait_for_timeout(2000)
                big_rss = [round(before, 1), round(_rss_mb(server.pid), 1)]
            for key, count in _page_problems(page).items():
                totals[key] += count
                if count:
                    failures.append(f"{key}: upload {name}")
        csvs_s = time.perf_counter() - began
        page.close()
    return {
        "urls": n_urls,
        "csvs": n_csvs,
        **totals,
        "big_upload_rss_mb_before_after": big_rss,
        "seconds": {"urls": round(urls_s, 1), "csvs": round(csvs_s, 1)},
        "failures": failures[:20],
    }


def table(result: dict) -> str:
    """The README's table."""
    lines = [
        "| sessions | RSS total (per run) | processes | health p50 / p99 training | p99 closing "
        "| training / waiting | steps/s min / median / max | fairness | freed after close | first chart (Nth tab) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["classroom"]:
        h, c, s = row["health_training"], row["health_closing"], row["steps_per_s"]
        mix = "" if row.get("mix", "plain") == "plain" else f", {row['mix']}"
        lines.append(
            f"| {row['sessions']}{mix} | {row['rss_mb']:.0f} MB ({row['rss_per_run_mb']:.0f} MB) | {row['processes']} "
            f"| {h.get('p50_ms')} / {h.get('p99_ms')} ms | {c.get('p99_ms')} ms | {row['admitted']} / {row['waiting']} "
            f"| {s['min']} / {s['median']} / {s['max']} | {row['fairness_min_over_median']} "
            f"| {row['freed_after_close_s']} s | {row['first_chart_s_first_and_last'][1]} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,12,20", help="sessions per round, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="training window measured per round")
    parser.add_argument("--urls", type=int, default=200, help="generated URL parameter sets (0: none)")
    parser.add_argument("--csvs", type=int, default=50, help="malformed CSV uploads (0: none)")
    parser.add_argument("--mixes", default="plain", help=f"what the tabs do, comma-separated: {', '.join(MIXES)}")
    parser.add_argument("--chromium", default=os.environ.get("EHFLOW_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument(
        "--browser-nice", type=int, default=0,
        help="run the browser at this niceness (19: lowest priority), as if the students' browsers ran on "
        "their own machines rather than on the server's cores",
    )  # fmt: skip
    parser.add_argument("--out", default="bench/results/classroom.json")
    parser.add_argument("--merge", action="store_true", help="keep the rows of --out that this run does not measure")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    mixes = [m.strip() for m in args.mixes.split(",") if m.strip()]
    if not set(mixes) <= set(MIXES):
        parser.error(f"--mixes: expected some of {', '.join(MIXES)}, got {args.mixes!r}")
    result: dict = {
        **provenance("classroom", "bench.classroom", argv, "browser on the same cores"),
        "workers_env": os.environ.get("EHFLOW_WORKERS", "default"),
        "browser_nice": args.browser_nice,
        "classroom": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.exists():
        kept = json.loads(out.read_text())
        if not sizes:
            result["classroom"] = kept.get("classroom", [])
        if not (args.urls or args.csvs) and "fuzz" in kept:
            result["fuzz"] = kept["fuzz"]
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as p:
        chromium = args.chromium
        if args.browser_nice:
            chromium = str(Path(scratch) / "chromium")
            Path(chromium).write_text(f'#!/bin/sh\nexec nice -n {args.browser_nice} {args.chromium} "$@"\n')
            os.chmod(chromium, 0o755)
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for n, mix in ((n, mix) for n in sizes for mix in mixes):
                result["classroom"].append(classroom(browser, n, args.seconds, mix))
                out.write_text(json.dumps(result, indent=2))
                print(json.dumps(result["classroom"][-1]), flush=True)
            if args.urls or args.csvs:
                result["fuzz"] = fuzz(browser, args.urls, args.csvs)
                out.write_text(json.dumps(result, indent=2))
                print(json.dumps(result["fuzz"]), flush=True)
        finally:
            browser.close()
    print(table(result))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
