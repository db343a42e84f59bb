"""Refresh the README's dashboard screenshots: start the app, train a while, save a picture.

python -m bench.screenshot [--seconds 60] [--preset fig2a] [--size 1400x1700] [--out assets/dashboard.png]
python -m bench.screenshot --view draw --seconds 30 --size 1400x1350 --out assets/dashboard_draw.png
python -m bench.screenshot --view lessons --seconds 40 --size 1400x1000 --out assets/dashboard_lessons.png

``--size 1366x768`` is a laptop's screen: what a class sees without scrolling. ``--view draw``
draws two strokes on the drawing surface before Train; ``--view lessons`` takes the trained model
into "Take the flow apart" and steps four parts into the likelihood's walk.
"""

from __future__ import annotations

import argparse

from dashboard.server import CHROMIUM_ARGS, ROOT, serve


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--preset", default="fig2a")
    parser.add_argument("--size", default="1400x1700", help="the browser's viewport, WIDTHxHEIGHT")
    parser.add_argument("--out", default=str(ROOT / "assets" / "dashboard.png"))
    parser.add_argument("--view", choices=("dashboard", "draw", "lessons"), default="dashboard")
    args = parser.parse_args()
    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected WIDTHxHEIGHT like 1366x768, got {args.size!r}")
    with serve() as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"{server.url}/?preset={'draw' if args.view == 'draw' else args.preset}")
            if args.view == "draw":
                draw_two_strokes(page)
            train = page.get_by_test_id("stSidebarUserContent").get_by_role("button", name="Train", exact=True)
            train.wait_for(timeout=120_000)
            train.click()
            page.mouse.move(700, 5)  # no tooltip in the picture
            page.wait_for_timeout(args.seconds * 1000)
            if args.view == "lessons":
                sidebar = page.get_by_test_id("stSidebarUserContent")
                sidebar.get_by_role("button", name="Pause", exact=True).click()
                page.get_by_text("Take the flow apart").click()  # the section opens with the model as it is now
                for _ in range(4):
                    page.get_by_role("button", name="Next half-step ▶").click()
                    page.wait_for_timeout(1000)
                page.locator(".st-key-lesson_walk_chart").scroll_into_view_if_needed()
                page.mouse.move(700, 5)
                page.wait_for_timeout(1000)
            page.screenshot(path=args.out)
        finally:
            browser.close()
    print(f"wrote {args.out}")


def draw_two_strokes(page) -> None:
    """Two strokes on the drawing surface, an arc above the middle and one below (two moons, roughly)."""
    canvas = page.get_by_role("application", name="draw", exact=False)
    canvas.wait_for(timeout=120_000)
    box = canvas.bounding_box()
    for arc in (
        [(0.2, 0.45), (0.35, 0.25), (0.55, 0.22), (0.7, 0.4)],
        [(0.35, 0.55), (0.5, 0.75), (0.7, 0.78), (0.85, 0.6)],
    ):
        page.mouse.move(box["x"] + arc[0][0] * box["width"], box["y"] + arc[0][1] * box["height"])
        page.mouse.down()
        for x, y in arc[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=12)
        page.mouse.up()
        page.wait_for_timeout(1500)


if __name__ == "__main__":
    main()
