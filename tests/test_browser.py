"""A real browser (Debian's Chromium through Playwright) against the served app on a tiny demo.

Signs in, opens a patient, waits for the trajectory chart and the 3D view, checks no
exception is shown, and keeps screenshots under ``test-artifacts/``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = [
    "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader", "--disable-background-networking", "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lvt demo --no-serve`` on a tiny cohort, then ``lvt app`` on a free loopback port."""
    var = tmp_path_factory.mktemp("browser") / "var"
    env = {**os.environ, "LVT_VAR_DIR": str(var), "LVT_SECRET_KEY": "browser-test", "OMP_NUM_THREADS": "1",
           "LVT_MODEL_PATH": str(var / "no-model.pt")}  # the ground-truth fallback: no inference here
    env.pop("LVT_DATABASE_URL", None)
    lvt = str(Path(sys.executable).parent / "lvt")
    built = subprocess.run(
        [lvt, "demo", "--no-serve", "--patients", "2", "--timepoints", "2", "--size", "tiny"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "clinician" in built.stderr and "lvt-clinician-demo" in built.stderr
    port = _free_port()
    server = subprocess.Popen([lvt, "app", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start within 60 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=20)


def _sign_in(page, url: str, username: str, password: str, screenshot: Path | None = None) -> None:
    """Open the app, sign in and wait for the Patients page (optionally shooting the form)."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("textbox", name="User name").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Patients").wait_for(timeout=30_000)


def _wait_for_sign_in_cookie(page) -> None:  # type: ignore[no-untyped-def]
    """The page fetches its HttpOnly cookie right after it renders, asynchronously: a new load
    before the answer arrives would rightly ask to sign in again."""
    for _ in range(100):
        if any(c["name"].startswith("lvt_session_") for c in page.context.cookies()):
            return
        page.wait_for_timeout(100)
    pytest.fail("the sign-in cookie was not set within 10 s")


def test_clinician_opens_patient_in_browser(served: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        _sign_in(page, served, "clinician", "lvt-clinician-demo", ARTIFACTS / "01-login.png")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "02-patients.png"), full_page=True)
        page.get_by_role("button", name="Open follow-up").click()
        page.get_by_role("heading", name="Patient").first.wait_for(timeout=30_000)
        page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)  # the trajectory chart
        page.wait_for_timeout(2000)
        assert page.get_by_text("Longest axial diameter per lesion track").count() >= 1
        assert page.get_by_text("ground-truth").count() >= 1  # said plainly: not model output
        page.screenshot(path=str(ARTIFACTS / "03-followup.png"), full_page=True)
        with page.expect_download(timeout=60_000) as pressed:  # made on the press, from the page's filter
            page.get_by_role("button", name="Download report (PDF)").click()
        download = pressed.value
        assert download.suggested_filename.startswith("lvt-followup-P-") and download.suggested_filename.endswith(".pdf")
        from pypdf import PdfReader

        report = PdfReader(download.path())
        assert report.xmp_metadata.pdfaid_part == "3" and "clinician" in report.metadata.author
        page.locator("[data-testid='stImage']").first.scroll_into_view_if_needed()  # the CT viewer
        page.mouse.wheel(0, 250)
        page.wait_for_timeout(800)
        page.screenshot(path=str(ARTIFACTS / "03b-viewer.png"))
        page.get_by_role("link", name="3D scene").click()
        page.get_by_role("heading", name="3D scene").wait_for(timeout=30_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_function(
            "document.querySelectorAll('.js-plotly-plot .gl-container canvas').length > 0", timeout=60_000
        )
        page.wait_for_timeout(2500)
        page.screenshot(path=str(ARTIFACTS / "04-scene.png"), full_page=True)
        page.get_by_role("link", name="Volumetry").click()
        page.get_by_role("heading", name="Volumetry").wait_for(timeout=30_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ARTIFACTS / "05-volumetry.png"), full_page=True)
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()


def test_a_link_opened_signed_out_asks_to_sign_in_then_opens(served: str) -> None:
    """A reload or a shared link used to show "Page not found" and then land on Patients."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{served}/volumetry", wait_until="domcontentloaded")
        page.get_by_role("textbox", name="User name").fill("clinician")
        assert page.get_by_text("Page not found").count() == 0
        page.get_by_role("textbox", name="Password").fill("lvt-clinician-demo")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Volumetry").wait_for(timeout=30_000)
        _wait_for_sign_in_cookie(page)
        assert page.url.endswith("/volumetry")
        assert page.locator("[data-testid='stException']").count() == 0
        page.goto(f"{served}/patients", wait_until="domcontentloaded")  # served at "/" alone, it was
        page.get_by_role("heading", name="Patients").wait_for(timeout=30_000)  # a "Page not found" dialog
        page.wait_for_timeout(1000)
        assert page.get_by_text("Page not found").count() == 0
        browser.close()


def test_a_reload_keeps_the_sign_in_until_sign_out(served: str) -> None:
    """Streamlit forgets its session on a reload; the sign-in used to go with it. A sign-out
    must reach the browser's other open tabs, and the next user starts on Patients."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        _sign_in(page, served, "researcher", "lvt-researcher-demo")
        _wait_for_sign_in_cookie(page)
        # the token is the server's to set: HttpOnly, so no script in the page can read it
        ours = [c for c in context.cookies() if c["name"].startswith("lvt_session_")]
        assert len(ours) == 1 and ours[0]["httpOnly"] and ours[0]["sameSite"] == "Strict"
        assert "lvt_session_" not in page.evaluate("document.cookie")
        page.goto(f"{served}/cohort", wait_until="domcontentloaded")  # a new load, as F5 or a new tab
        page.get_by_role("heading", name="Cohort", exact=True).wait_for(timeout=30_000)
        assert page.get_by_role("textbox", name="User name").count() == 0
        other_tab = context.new_page()
        other_tab.goto(f"{served}/volumetry", wait_until="domcontentloaded")
        other_tab.get_by_role("heading", name="Volumetry").wait_for(timeout=30_000)
        page.get_by_role("link", name="Patients").click()
        page.get_by_role("button", name="Open follow-up").click()
        page.get_by_role("heading", name="Patient").first.wait_for(timeout=30_000)
        # the whole follow-up drawn first: a click while the page still ran was lost under load
        page.get_by_role("heading", name="Images and lesions").wait_for(timeout=60_000)
        page.get_by_role("button", name="Sign out").click()  # on a patient's page
        page.get_by_role("textbox", name="User name").wait_for(timeout=30_000)
        other_tab.get_by_role("link", name="Patients").click()  # it kept working, and writing
        other_tab.get_by_role("textbox", name="User name").wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("textbox", name="User name").wait_for(timeout=30_000)
        assert page.get_by_role("heading", name="Cohort", exact=True).count() == 0
        page.get_by_role("textbox", name="User name").fill("clinician")  # the next user
        page.get_by_role("textbox", name="Password").fill("lvt-clinician-demo")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Patients").wait_for(timeout=30_000)  # not the last patient
        assert "patient=" not in page.url
        browser.close()
