"""The documentation site in a real browser: it is built (``mkdocs build --strict``, as CI does), served over http on
localhost and read by headless Chromium at 1400 x 1000 px, through the Debian ``chromedriver`` as
``tests/test_serve.py`` drives it.

Served over http, not opened as files: Material's search runs in a web worker, which a ``file://`` page cannot start
(it then stays on "Initializing search").
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1400, 1000)

pytestmark = pytest.mark.slow  # a site build (about 20 s) and a browser


def _browser() -> Any:
    """A headless Chromium through the system chromedriver; skips with the reason when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("no chromium / chromedriver (the Debian packages chromium, chromium-driver; .ci/install adds them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the dev extra) is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
    folder = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return folder


@pytest.fixture(scope="module")
def url(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = _browser()
    yield driver
    driver.quit()


def _open(browser: Any, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.readyState") == "complete")


# Each code block wider than its box: its first line, and the lines that do not fit.
WIDE_CODE_BLOCKS = """
const wide = [];
for (const code of document.querySelectorAll('pre > code')) {
  if (code.scrollWidth <= code.clientWidth + 1) continue;
  const probe = document.createElement('span');
  probe.textContent = 'x'.repeat(100);
  code.appendChild(probe);
  const charWidth = probe.getBoundingClientRect().width / 100;
  probe.remove();
  const fits = Math.floor((code.clientWidth - 2 * parseFloat(getComputedStyle(code).paddingLeft)) / charWidth);
  wide.push(code.textContent.split('\\n').filter(line => line.length > fits));
}
return wide;
"""


def test_getting_started_code_fits_a_wide_content_column(browser: Any, url: str) -> None:
    _open(browser, url + "getting-started/")
    content = browser.execute_script("return document.querySelector('.md-content').getBoundingClientRect().width")
    assert content > 850, f"the text column is {content:.0f} px wide at {WINDOW[0]} px (Material's default: ~700)"
    wide = browser.execute_script(WIDE_CODE_BLOCKS)
    assert not wide, "code blocks on Getting started scroll sideways; break these lines with \\:\n" + "\n".join(
        line for lines in wide for line in lines
    )


def test_tables_fit_and_keep_names_whole(browser: Any, url: str) -> None:
    for page in ("api/", "models/", "data/", "getting-started/"):
        _open(browser, url + page)
        wide = browser.execute_script(
            "return [...document.querySelectorAll('.md-typeset__scrollwrap')]"
            ".filter(w => w.scrollWidth > w.clientWidth + 1).map(w => w.textContent.trim().slice(0, 80))"
        )
        assert not wide, f"{page}: tables wider than the text column: {wide}"
        broken = browser.execute_script(
            "return [...document.querySelectorAll('.md-typeset table code')]"
            ".filter(c => c.getClientRects().length > 1).map(c => c.textContent)"
        )
        assert not broken, f"{page}: names broken across lines in tables: {broken}"


def test_api_reference_shows_signatures_and_docstring_lists(browser: Any, url: str) -> None:
    _open(browser, url + "api/")
    signature = browser.execute_script(
        "const h = document.getElementById('video_cnn_rnn.models.classifier.VideoClassifier');"
        "const s = h && h.parentElement.querySelector('.doc-signature'); return s ? s.textContent : ''"
    )
    assert "backbone: str" in signature and "class_weights" in signature, signature[:200]
    items = browser.execute_script("return [...document.querySelectorAll('li > code')].map(c => c.textContent)")
    assert {"raise", "skip", "warn"} <= set(items), "VideoDataset's on_error list renders inline"


def test_search_finds_the_timeline(browser: Any, url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _open(browser, url)
    field = browser.find_element(By.CSS_SELECTOR, ".md-search__input")
    field.click()
    field.send_keys("timeline")
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__item"))
    results = [item.text for item in browser.find_elements(By.CSS_SELECTOR, ".md-search-result__item")]
    assert any("timeline" in text.lower() for text in results), results
