"""Lesson 00 as a student meets it: JupyterLab on localhost, the notebook
opened in headless Chromium, Run All Cells from the menu, then the figures
and the widget's controls on the page, a slider moved by the keyboard, and
no cell that raised.

Needs Debian's chromium and chromium-driver (`.ci/run` installs them); the
test is skipped without them, except under CI, where it fails.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import warnings

import pytest

from tests.course.conftest import REPO
from tests.course.conftest import kernel_env

pytestmark = [pytest.mark.course, pytest.mark.xdist_group("kernels")]  # see test_round_trip.py

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
LESSON = "00_pgd"
SCREENSHOT = "/tmp/robustlab-browser-test.png"


def _browser_available():
    return os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)


if not _browser_available():
    if os.environ.get("CI"):
        pytest.fail("chromium and chromium-driver are missing: .ci/run installs them "
                    "(apt-get install chromium chromium-driver)", pytrace=False)
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_lab(root):
    """JupyterLab serving `root`, a student's folder that holds lesson 00 with
    its exercises solved."""
    os.makedirs(root / LESSON)
    shutil.copy(os.path.join(REPO, "solutions", LESSON, f"{LESSON}.ipynb"), root / LESSON)
    port, token = _free_port(), "robustlab-test"
    # Render every cell (JupyterLab 4 renders only those in view by default) and
    # do not ask about news.
    settings = root / "lab-settings"
    for plugin, values in (("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
                           ("@jupyterlab/apputils-extension/notification", {"fetchNews": "false"})):
        path = settings / f"{plugin}.jupyterlab-settings"
        os.makedirs(path.parent, exist_ok=True)
        path.write_text(json.dumps(values))
    log = open(root / "lab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--allow-root",
         "--ServerApp.disable_check_xsrf=True"],
        # A workspace of its own: JupyterLab restores the layout it last saved
        # in ~/.jupyter/lab/workspaces (an earlier run's notebooks) otherwise.
        env=kernel_env(JUPYTERLAB_SETTINGS_DIR=str(settings),
                       JUPYTERLAB_WORKSPACES_DIR=str(root / "lab-workspaces")), stdout=log,
        stderr=subprocess.STDOUT)
    lab = dict(root=root, base=f"http://127.0.0.1:{port}", token=token, server=server, log=log)
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{lab['base']}/api/status?token={token}", timeout=2)
            return lab
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                _stop_lab(lab)
                pytest.fail(f"JupyterLab did not start:\n{open(root / 'lab.log').read()}")
            time.sleep(0.5)


def _stop_lab(lab):
    lab["server"].terminate()
    try:
        lab["server"].wait(timeout=20)
    except subprocess.TimeoutExpired:
        lab["server"].kill()
    lab["log"].close()


def _start_browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                            options=options)


class _Stalled(Exception):
    """A wait ran out: what the page and the server showed is the message."""


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """Lesson 00 opened in JupyterLab in the browser, all cells run, the
    notebook saved: `dict(browser, notebook)`.

    A run that stalls (a wait runs out) is tried once more from the start, a
    new JupyterLab and browser, with a warning that carries what the page
    showed, so that a stall of the browser or the server is on record
    without failing the course's tests. (The project's CI once waited 600 s
    here on a run that had finished: the test had counted the code cells on
    a page still being drawn; `_run_lesson` counts them in the file now.) A
    run that stops because a cell raised fails at once, as does one that a
    dialog interrupts."""
    for attempt in (1, 2):
        lab = _start_lab(tmp_path_factory.mktemp("student"))
        browser = None
        try:
            browser = _start_browser()
            notebook = _run_lesson(lab, browser)
        except _Stalled as stall:
            browser.quit()
            _stop_lab(lab)
            if attempt == 2:
                pytest.fail(f"both attempts stalled; the second: {stall}", pytrace=False)
            warnings.warn(f"the browser test's first attempt stalled and is tried again: {stall}",
                          stacklevel=1)
            continue
        except BaseException:
            if browser is not None:
                browser.quit()
            _stop_lab(lab)
            raise
        yield dict(browser=browser, notebook=notebook)
        browser.quit()
        _stop_lab(lab)
        return


def _wait(condition, timeout, what, driver, root=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            value = condition()
        except StaleElementReferenceException:
            # The page redrew an element between finding it and reading it
            # (the explorer replaces its image on every redraw): look again.
            value = None
        if value:
            return value
        time.sleep(1)
    driver.save_screenshot(SCREENSHOT)
    raise _Stalled(f"timed out after {timeout} s waiting for {what} (screenshot: {SCREENSHOT})"
                   f"\n{_diagnosis(driver, root)}")


def _fail(message, driver, root=None):
    """Fail with what the page and the server showed: a CI log is all there
    is to read when this fails elsewhere."""
    driver.save_screenshot(SCREENSHOT)
    pytest.fail(f"{message} (screenshot: {SCREENSHOT})\n{_diagnosis(driver, root)}",
                pytrace=False)


def _diagnosis(driver, root):
    def texts(selector, limit):
        try:
            found = [e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, selector)]
        except WebDriverException as error:
            return f"<unreadable: {error.msg}>"
        return " | ".join(t for t in found if t)[-limit:] or "none"

    try:
        status = [e.get_attribute("data-status") for e in driver.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator")]
    except WebDriverException as error:
        status = f"<unreadable: {error.msg}>"
    lines = [
        "prompts: " + " ".join(p.strip() or "[ ]:" for p in _prompts(driver)),
        f"kernel status: {status}",
        "dialogs: " + texts(".jp-Dialog", 600),
        "notifications: " + texts(".Toastify__toast, .jp-Notification-Toast", 600),
        "errors and stderr: " + texts(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", 1500),
    ]
    if root is not None and (root / "lab.log").exists():
        lines.append("JupyterLab's log, the end:\n" + (root / "lab.log").read_text()[-2500:])
    return "\n".join(lines)


def _prompts(driver):
    try:
        return [p.text for p in driver.find_elements(
            By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell .jp-InputArea-prompt")]
    except (StaleElementReferenceException, WebDriverException):
        return []


def _click_menu(driver, menu, item):
    driver.find_element(
        By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{menu}']").click()
    driver.find_element(
        By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']").click()


def _run_lesson(lab, browser):
    """Open the lesson, Run All Cells, save: the saved notebook."""
    root = lab["root"]
    browser.get(f"{lab['base']}/lab/tree/{LESSON}/{LESSON}.ipynb?token={lab['token']}")
    # The code cells counted in the file, not on the page: JupyterLab adds
    # the cells to the page one after another, and a count taken while it
    # still did (under load) never matched the run's, so the wait for every
    # cell to run went on for its whole 600 s (the CI stall of b69e7ca, seen
    # again with the prompts in the failure message: all 16 ran).
    with open(root / LESSON / f"{LESSON}.ipynb") as f:
        n_code = sum(cell["cell_type"] == "code" for cell in json.load(f)["cells"])
    _wait(lambda: len(_prompts(browser)) == n_code, 90, "the notebook's cells to render",
          browser, root)
    _wait(lambda: browser.find_elements(
        By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"), 90,
        "the kernel to start", browser, root)
    for tries in (1, 2, 3):
        _click_menu(browser, "Run", "Run All Cells")
        try:
            # Run All marks every cell it queues with a star at once.
            _wait(lambda: any("*" in p or _counted(p) for p in _prompts(browser)), 30,
                  f"Run All Cells to start a cell (try {tries} of 3)", browser, root)
            break
        except _Stalled:
            if tries == 3:
                raise
        # The click started nothing (the menu item is disabled while the notebook
        # is not JupyterLab's current widget): make it current, click again.
        browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").click()

    stopped_since = None

    def finished():
        nonlocal stopped_since
        prompts = _prompts(browser)
        if browser.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
            _fail("a dialog opened while the cells ran (a dead kernel, say)", browser, root)
        if any("*" in p for p in prompts) or not prompts:
            stopped_since = None
            return False
        ran = sum(_counted(p) for p in prompts)
        if ran == n_code:
            return True
        # Nothing queued and cells not run: the kernel stopped the run (a cell
        # raised). Allow a few seconds for the page to catch up first.
        stopped_since = stopped_since or time.time()
        if time.time() - stopped_since > 10:
            _fail(f"the run stopped with {ran} of the notebook's {n_code} code cells run",
                  browser, root)
        return False

    _wait(finished, 600, "every cell to run", browser, root)
    browser.find_element(By.CSS_SELECTOR, ".jp-Notebook").click()
    _click_menu(browser, "File", "Save Notebook")
    path = root / LESSON / f"{LESSON}.ipynb"
    _wait(lambda: any(o for c in json.load(open(path))["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", [])), 30, "the saved notebook", browser, root)
    return json.load(open(path))


def _counted(prompt):
    """Whether a cell's prompt shows its execution count: it ran."""
    return prompt.strip("[]: ").isdigit()


def test_no_cell_raised(session):
    errors = [(i, o["ename"], o["evalue"]) for i, c in enumerate(session["notebook"]["cells"])
              for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors


def test_the_figures_render_as_images(session):
    browser = session["browser"]
    images = browser.find_elements(By.CSS_SELECTOR, ".jp-RenderedImage img")
    assert len(images) >= 2  # the attacked digits, the accuracy curves
    explorer = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-image")
    assert explorer, "the explorer's figure did not render"
    assert all(img.get_attribute("naturalWidth") not in (None, "0") for img in images + explorer)


def test_the_widget_shows_its_controls_and_redraws_when_moved(session):
    browser = session["browser"]
    widget = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-vbox")
    assert widget, "the explorer's widget did not render"
    labels = [e.text for e in widget[-1].find_elements(By.CSS_SELECTOR, ".widget-label")]
    assert {"model", "eps", "steps"} <= set(labels)
    before = widget[-1].find_element(By.CSS_SELECTOR, "img").get_attribute("src")
    handle = widget[-1].find_elements(By.CSS_SELECTOR, ".noUi-handle")[0]
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)

    def redrawn():
        boxes = browser.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-vbox")
        images = boxes[-1].find_elements(By.CSS_SELECTOR, "img") if boxes else []
        return images and images[0].get_attribute("src") != before

    try:
        _wait(redrawn, 60, "the explorer to redraw after moving eps", browser)
    except _Stalled as stall:
        pytest.fail(str(stall), pytrace=False)
