"""A person's view: a real JupyterLab in headless Chromium, driven with Playwright.

* a slider moved with a key press, and the kernel's recomputed number read back from the page;
* a real (smoke) training run whose live loss curve is read from the page while it trains: the
  number of points grows, and the final figure holds every logged step.

JupyterLab runs on a free local port with a one-cell notebook per test. Playwright drives Debian's
Chromium (``/usr/bin/chromium``; no browser download). Without Chromium or the ``playwright``
package the tests are skipped locally, and fail under CI=true, where they must run.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None
if not (CHROMIUM and sync_playwright):
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the browser tests: install Debian's chromium and the playwright package")
    pytest.skip("needs Debian's chromium (apt-get install chromium) and `pip install playwright`",
                allow_module_level=True)

pytestmark = pytest.mark.browser

# Chromium flags for a closed network and a root user (as in many containers and CI).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # not up yet / element not there yet
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture()
def jupyterlab(tmp_path):
    """Start JupyterLab serving ``tmp_path``; yields ``open(code) -> url`` for a one-cell notebook."""
    port, token = _free_port(), "labkit-browser-test"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "LABKIT_PRESET": "smoke"}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"

    def notebook(code: str) -> str:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "test.ipynb")
        return f"{base}/lab/tree/test.ipynb?token={token}"

    try:
        _wait(lambda: urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).status == 200,
              90, "JupyterLab to start")
        yield notebook
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture()
def page():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _run_notebook(page, url: str) -> None:
    """Open the notebook, wait for an idle kernel, and run every cell."""
    page.goto(url)
    _wait(lambda: page.evaluate("() => !!(window.jupyterapp && document.querySelector('.jp-Notebook'))"),
          120, "the notebook to open")
    _wait(lambda: page.evaluate(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return !!(k && k.status === 'idle'); }"), 120, "the kernel to be ready")
    # Not awaited: the command's promise settles only when the cells finish, and the tests watch them run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")


def test_moving_the_slider_in_jupyterlab_recomputes_the_loss(jupyterlab, page):
    _run_notebook(page, jupyterlab("from labkit import widgets\nwidgets.neg_log_explorer(0.51)"))
    readout = page.locator(".widget-html-content", has_text="nats")
    readout.wait_for(timeout=120_000)
    assert "−ln 0.51 = 0.673 nats" in readout.text_content()
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.click()
    handle.press("ArrowRight")
    _wait(lambda: "0.52" in readout.text_content(), 60, "the readout to follow the slider")
    assert "−ln 0.52 = 0.654 nats" in readout.text_content()  # −ln 0.52 = 0.6539…


# A real smoke pretraining run whose live plot the browser watches. The callback pauses after each
# redraw so that a point on the page can be read before the next evaluation arrives.
LIVE_RUN = """
import json, time
from labkit import plots
from labkit.presets import get_preset
from labkit.experiments.pretraining import quick_run

live = plots.LiveLossPlot(title="live curve test")
def slow_callback(history):
    live(history)
    time.sleep(1.5)

_, _, result, _ = quick_run(get_preset("smoke"), steps=30, eval_every=5, callback=slow_callback, progress=False)
print("LOGGED", json.dumps([h["step"] for h in result.history]))
"""

# The points of the first trace (train loss) of every plotly figure in the notebook, as drawn.
POINTS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
    .map(gd => (gd.data && gd.data[0] && gd.data[0].x) ? Array.from(gd.data[0].x) : [])"""


def test_a_live_training_curve_grows_in_jupyterlab(jupyterlab, page):
    _run_notebook(page, jupyterlab(LIVE_RUN))
    seen: list[int] = []  # the number of points on the page, each time it changed
    deadline = time.monotonic() + 240
    logged = None
    while time.monotonic() < deadline:
        figures = page.evaluate(POINTS_JS)
        assert len(figures) <= 1, f"the live plot must redraw in place, found {len(figures)} figures"
        if figures and (not seen or len(figures[0]) != seen[-1]):
            seen.append(len(figures[0]))
        output = page.locator(".jp-OutputArea-output", has_text="LOGGED")
        if output.count():
            logged = json.loads(output.first.text_content().split("LOGGED", 1)[1].strip())
            break
        time.sleep(0.2)
    print(f"points of the live curve on the page over time: {seen}")
    assert logged, f"the training cell did not finish; points seen so far: {seen}"
    assert logged == [5, 10, 15, 20, 25, 30]
    final = _wait(lambda: (lambda f: f if f and len(f[0]) == len(logged) else None)(page.evaluate(POINTS_JS)),
                  30, "the final figure")
    assert final[0] == logged, "the final figure must hold every logged step"
    # The learner saw the curve grow while the run went on, one evaluation at a time.
    assert seen == sorted(seen) and len(seen) >= 4, f"points on the page over time: {seen}"
    assert seen[0] < len(logged), f"the first figure the page showed was already complete: {seen}"


# The shaded (flat) regions of every plotly figure on the page: [x0, x1] of each rectangle.
SHADES_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
    .map(gd => ((gd.layout && gd.layout.shapes) || []).filter(s => s.type === 'rect').map(s => [s.x0, s.x1]))"""


def test_lab05_clip_slider_moves_the_table_and_the_flat_regions(jupyterlab, page):
    _run_notebook(page, jupyterlab("from labkit import widgets\nwidgets.ppo_clip_explorer(0.2)"))
    readout = page.locator(".widget-html-content", has_text="clipped")
    readout.wait_for(timeout=120_000)
    assert "ε = 0.20" in readout.text_content()
    assert _wait(lambda: page.evaluate(SHADES_JS), 60, "the clip figure") == [[[1.2, 2.5], [0.0, 0.8]]]
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.click()
    handle.press("ArrowRight")  # ε 0.20 -> 0.21
    _wait(lambda: "ε = 0.21" in readout.text_content(), 60, "the table to follow the slider")
    # r = 1.5 with A = +2: min(3.0, 1.21 * 2) = 2.42 (it was 2.40)
    assert "2.420" in readout.text_content() and "2.400" not in readout.text_content()
    shades = _wait(lambda: (lambda s: s if s and s[0][0][0] != 1.2 else None)(page.evaluate(SHADES_JS)),
                   60, "the figure to redraw")
    assert shades[0][0][0] == pytest.approx(1.21) and shades[0][1][1] == pytest.approx(0.79)


def test_lab06_beta_slider_moves_the_optimum_and_its_kl(jupyterlab, page):
    from labkit.losses import tilted_kl, tilted_policy
    from labkit.widgets import dpo_toy

    _run_notebook(page, jupyterlab("from labkit import widgets\nwidgets.dpo_tilt_explorer(1.0)"))
    readout = page.locator(".widget-html-content", has_text="KL(π* ‖ π_SFT)")
    readout.wait_for(timeout=120_000)
    assert "KL(π* ‖ π_SFT) = 0.399 nats" in readout.text_content()
    bars_js = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
        .map(gd => (gd.data || []).filter(t => t.type === 'bar').map(t => Array.from(t.y)))"""
    before = _wait(lambda: page.evaluate(bars_js), 60, "the π* bars")[0]
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.focus()  # (a click could nudge the handle by a pixel: the log slider would read β = 0.998)
    handle.press("ArrowRight")  # log10 β: 0 -> 0.01, β 1 -> 1.023
    _wait(lambda: "β = 1.02:" in readout.text_content(), 60, "the table to follow the slider")
    # the page shows β to 3 digits (1.02): the KL it shows must be the exact KL at a β that rounds so
    text = readout.text_content()
    shown = float(re.search(r"KL\(π\* ‖ π_SFT\) = ([0-9.]+) nats", text).group(1))
    toy = dpo_toy()
    low, high = (tilted_kl(toy["sft"], toy["rewards"], b) for b in (1.025, 1.015))
    assert low - 5e-4 <= shown <= high + 5e-4 and shown < 0.399  # 0.386-0.389: a larger β stays closer
    after = _wait(lambda: (lambda b: b[0] if b and b[0] != before else None)(page.evaluate(bars_js)), 60,
                  "the π* bars to redraw")
    pi_star = tilted_policy(toy["sft"], toy["rewards"], 1.02).tolist()
    assert any(bar == pytest.approx(pi_star, abs=5e-3) for bar in after)  # the π* bars, at the new β
