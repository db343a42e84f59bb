"""Refresh the README's dashboard screenshot: start the app, train a while, save assets/dashboard.png.

python -m bench.screenshot [--seconds 60] [--preset fig2a] [--size 1400x1700] [--out assets/dashboard.png]

``--size 1366x768`` is a laptop's screen: what a class sees without scrolling.
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
    args = parser.parse_args()
    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size: expected WIDTHxHEIGHT like 1366x768, got {args.size!r}")
    with serve() as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"{server.url}/?preset={args.preset}")
            train = page.get_by_test_id("stSidebarUserContent").get_by_role("button", name="Train", exact=True)
            train.wait_for(timeout=120_000)
            train.click()
            page.mouse.move(700, 5)  # no tooltip in the picture
            page.wait_for_timeout(args.seconds * 1000)
            page.screenshot(path=args.out)
        finally:
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
