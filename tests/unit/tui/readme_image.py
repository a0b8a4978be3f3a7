"""docs/img/top.png, the README's picture of `aios-host top`: the app on the tests' daemon model
(fakes.daemon_model: a 64-CPU host with two GPUs, three classes, two jobs, a plan), exported as SVG
the way the snapshot tests take it, then converted to PNG by cairosvg with the SVG's web font
(Fira Code, not installed here) mapped to DejaVu Sans Mono.

Needs cairosvg (pip install cairosvg into .venv; it uses the system's libcairo2).
Run: .venv/bin/python -m tests.unit.tui.readme_image [OUT.png]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from aios_host.tui.app import TopApp
from tests.unit.tui.fakes import daemon_model

OUT = Path(__file__).resolve().parents[3] / "docs/img/top.png"
SIZE = (160, 44)
FONT = "DejaVu Sans Mono"


async def svg() -> str:
    model = daemon_model()
    app = TopApp(lambda: model, interval_s=3600, threaded=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down")  # the cursor off the first row, as a person would leave it
        return app.export_screenshot()


def main() -> int:
    import cairosvg

    os.environ["TZ"] = "UTC"
    time.tzset()
    text = asyncio.run(svg()).replace('"Fira Code"', f'"{FONT}"').replace("Fira Code, monospace", f"{FONT}, monospace")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    cairosvg.svg2png(bytestring=text.encode(), write_to=str(out), output_width=1600)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
