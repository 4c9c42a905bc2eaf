"""The widgets in a real browser: JupyterLab and Notebook 7 served locally, driven by headless Chromium.

A JupyterLab server (started the way ``make lab`` starts it, on a free port and a
temporary copy of ``tests/browser/widgets_demo.ipynb``) and Debian's ``chromium``
driven through Playwright: the notebook runs, a slider is dragged with the mouse
and a button clicked, and the rendered widgets must change (their images, their
text and screenshots of them). The screenshots are kept in ``test-artifacts/browser/``.
``make test`` installs chromium when it is missing; nothing here downloads a browser.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tests" / "browser" / "widgets_demo.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("DVL_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 90_000          # per DOM condition: the machine may be busy with the rest of the suite

# JavaScript conditions the test waits for
KERNEL_READY = """() => {
    const app = window.jupyterapp, panel = app && app.shell.currentWidget;
    const ctx = panel && panel.sessionContext, kernel = ctx && ctx.session && ctx.session.kernel;
    return !!kernel && ctx.isReady && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
}"""
WIDGETS_SHOWN = """() =>
    document.querySelectorAll('.dvl-codebook-explorer img[src^="blob:"]').length === 2 &&
    document.querySelectorAll('.dvl-quantizer-playground img[src^="blob:"]').length === 1"""
CHANGED = "([selector, old]) => document.querySelector(selector).getAttribute('src') !== old"
# The picture changed and has settled: a slider streams values while it moves, so the
# last picture is the one in place when the kernel is idle and the image stays the same
# across two polls.
SETTLED = """([selector, old]) => {
    const src = document.querySelector(selector).getAttribute('src');
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const settled = src !== old && src === window.__dvlLastSrc && kernel.status === 'idle';
    window.__dvlLastSrc = src;
    return settled;
}"""


def test_demo_notebook_is_committed_clean():
    data = json.loads(DEMO.read_text())
    assert "widgets" not in data["metadata"], "the demo notebook stores widget state"
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    sources = "".join("".join(c["source"]) for c in code)
    assert "codebook_explorer(" in sources and "quantizer_playground(" in sources


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root: Path, tmp: Path, port: int) -> subprocess.Popen:
    """JupyterLab as ``make lab`` runs it (headless, no token), on ``root``, with throwaway settings."""
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # no news or update pop-ups over the notebook
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
           "JUPYTER_PLATFORM_DIRS": "1", "MPLBACKEND": "Agg"}
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            "--IdentityProvider.token=", f"--ServerApp.root_dir={root}",
            # window.jupyterapp: the test runs the notebook through the app's own command
            "--LabApp.expose_app_in_browser=True", "--JupyterNotebookApp.expose_app_in_browser=True"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    log = open(tmp / "server.log", "wb")
    return subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_server(server: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert server.poll() is None, f"JupyterLab exited early:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no JupyterLab on port {port} within 90 s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def _open_and_run(page, url: str) -> None:
    """Open a notebook, wait for its kernel, run every cell, wait until both widgets show an image."""
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=WAIT_MS)
    page.wait_for_function(KERNEL_READY, timeout=WAIT_MS)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(WIDGETS_SHOWN, timeout=WAIT_MS)


def _drag_step_slider(page, explorer, name: str) -> float:
    """Drag the explorer's step slider to a third of its track, check the picture follows; seconds taken."""
    explorer.scroll_into_view_if_needed()
    image = ".dvl-codebook-explorer img"
    src = page.get_attribute(image, "src")
    readout = explorer.locator(".widget-readout").first
    step_before = readout.inner_text()
    before = explorer.screenshot(path=str(ARTIFACTS / f"{name}_explorer_before.png"))
    handle = explorer.locator(".noUi-handle").first.bounding_box()
    track = explorer.locator(".noUi-target").first.bounding_box()
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    start = time.monotonic()
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] / 3, y, steps=8)
    page.mouse.up()
    page.wait_for_function(CHANGED, arg=[image, src], timeout=WAIT_MS, polling="raf")
    seconds = time.monotonic() - start
    page.wait_for_function(SETTLED, arg=[image, src], timeout=WAIT_MS, polling=300)
    after = explorer.screenshot(path=str(ARTIFACTS / f"{name}_explorer_after.png"))
    assert int(readout.inner_text()) < int(step_before), "the step slider did not move"
    assert after != before, "the explorer looks the same after moving the step slider"
    return seconds


def _click_train(page, playground, name: str) -> float:
    """Click the playground's train button, check the picture and the numbers follow; seconds taken."""
    playground.scroll_into_view_if_needed()
    image = ".dvl-quantizer-playground img"
    src = page.get_attribute(image, "src")
    status = playground.locator(".widget-html").first
    assert "step 0 " in status.inner_text()
    before = playground.screenshot(path=str(ARTIFACTS / f"{name}_playground_before.png"))
    start = time.monotonic()
    playground.get_by_role("button", name="train 200 steps").click()
    page.wait_for_function(CHANGED, arg=[image, src], timeout=WAIT_MS, polling="raf")
    seconds = time.monotonic() - start
    page.wait_for_function(SETTLED, arg=[image, src], timeout=WAIT_MS, polling=300)
    after = playground.screenshot(path=str(ARTIFACTS / f"{name}_playground_after.png"))
    assert "step 200 " in status.inner_text(), status.inner_text()
    assert after != before, "the playground looks the same after training"
    return seconds


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_widgets_respond_in_jupyterlab_and_notebook7(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: `make test` installs Debian's chromium (needs root or sudo)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    root = tmp_path / "notebooks"
    root.mkdir()
    # a copy per front end: the committed notebook never gets outputs, and each page has its own kernel
    for name in ("lab", "notebook7"):
        shutil.copy(DEMO, root / f"{name}.ipynb")
    port = _free_port()
    server = _start_lab(root, tmp_path, port)
    started, errors, timings = time.monotonic(), [], []
    try:
        _wait_for_server(server, port, tmp_path / "server.log")
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
                for name, url in (("lab", "/lab/tree/lab.ipynb"), ("notebook7", "/notebooks/notebook7.ipynb")):
                    try:
                        opened = time.monotonic()
                        _open_and_run(page, f"http://127.0.0.1:{port}{url}")
                        timings.append(f"{name}: notebook opened and run in {time.monotonic() - opened:.1f} s")
                        slider = _drag_step_slider(page, page.locator(".dvl-codebook-explorer"), name)
                        train = _click_train(page, page.locator(".dvl-quantizer-playground"), name)
                        timings.append(f"{name}: slider drag to the first new picture {1000 * slider:.0f} ms, "
                                       f"train click to the new picture {1000 * train:.0f} ms")
                        stderr = page.locator("[data-mime-type='application/vnd.jupyter.stderr']")
                        assert stderr.count() == 0, f"a cell wrote to stderr: {stderr.first.inner_text()}"
                    except BaseException:
                        page.screenshot(path=str(ARTIFACTS / f"{name}_failure.png"), full_page=True)
                        raise
            finally:
                browser.close()
    finally:
        _stop(server)
        (ARTIFACTS / "page-errors.txt").write_text("".join(f"{e}\n" for e in errors))
    # the front ends' own extensions may log errors (e.g. a command another app registers); the widgets may not
    assert not [e for e in errors if "widget" in e.lower()], f"widget errors in the page: {errors}"
    timings.append(f"server start to the last check: {time.monotonic() - started:.1f} s")
    (ARTIFACTS / "timing.txt").write_text("\n".join(timings) + "\n")
