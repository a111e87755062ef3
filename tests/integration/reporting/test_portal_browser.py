"""The failure portal in a real headless browser (Debian's chromium, driven by Playwright).

An operator logs in through the form, sees the rows with hostile carrier text shown as text (not
markup), filters by code, opens a detail view, and the page's screenshot shows the table's rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.support.servers import wait_until
from tests.support.sms import APP_PASSWORD, APP_USER, SHORT_CODE, SmsDeployment

HOSTILE = '<img src=x onerror="alert(1)"> & "quoted"\nsecond line'
ADMIN_TOKEN = "browser-admin-token-" + "0" * 32  # at least 32 bytes, as check-config requires
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own check starts it: no sandbox (root), no GPU, no background traffic off the machine.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is needed: bash scripts/system-packages installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def test_the_operator_sees_rows_escaped_filters_them_and_opens_one(
        browser: Browser, make_sms: Callable[..., SmsDeployment], tmp_path: Path) -> None:
    deployment = make_sms(admin={"token": ADMIN_TOKEN})
    deployment.aggregator.rule("refuse", source=SHORT_CODE, description=HOSTILE, error_code="1401")
    for n in range(3):
        deployment.submit(destination=f"+1847555010{n}", level="NONE")
    with deployment.http(auth=(APP_USER, APP_PASSWORD)) as client:
        wait_until(lambda: client.get("/api/failures").json()["total"] == 3, timeout=15,
                   message="three refusals recorded")
        assert client.post("/sms/v1/messages", content=b"not xml",
                           headers={"Content-Type": "application/xml"}).status_code == 400
        wait_until(lambda: client.get("/api/failures").json()["total"] == 4, timeout=10,
                   message="the malformed request recorded")

    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{deployment.url}/portal/failures")
    assert page.url.startswith(f"{deployment.url}/portal/login")  # login required
    page.fill("input[name=user_name]", "admin")
    page.fill("input[name=password]", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_selector("#failures tbody tr td a")
    # The seed's menu: the Failure Data sub-tab under the Message Data tab, the page shown.
    assert page.get_by_role("tab", name="Message Data", selected=True).count() == 1
    sub_tab = page.get_by_role("navigation", name="Message Data").get_by_role("link", name="Failure Data")
    assert sub_tab.get_attribute("aria-current") == "page"
    rows = page.locator("#failures tbody tr")
    assert rows.count() == 4
    assert page.locator("#summary").inner_text() == "4 failures; page 1 of 1."
    # The carrier's text is shown as text: no element made from it, no script run.
    errors = page.locator("#failures td.error").all_text_contents()
    assert errors.count(f"{HOSTILE} (error 1401)") == 0  # PrimaryError carries more than the raw text ...
    assert sum(HOSTILE in text for text in errors) == 3  # ... but contains it verbatim, three times
    assert page.locator("#failures img").count() == 0 and dialogs == []
    assert page.locator("#chart rect").count() >= 1

    screenshot = tmp_path / "portal.png"
    table = page.locator("#failures")
    table.screenshot(path=str(screenshot))
    box = table.bounding_box()
    header = page.locator("#failures thead").bounding_box()
    assert box is not None and header is not None
    assert box["height"] >= header["height"] + 4 * 15  # four rendered rows below the header
    assert screenshot.stat().st_size > 5_000  # a picture of text, not a blank
    page.screenshot(path=str(tmp_path / "portal-page.png"), full_page=True)

    # Filter by the Request flag (1): only the malformed request remains.
    page.check("input[name=code][value='1']")
    page.click("#filters button[type=submit]")
    page.wait_for_selector("#summary:has-text('1 failure;')")
    assert rows.count() == 1 and "Request:" in rows.first.inner_text()

    # The detail view of that entry.
    rows.first.locator("a").click()
    page.wait_for_selector("#detail")
    assert "1 (REQUEST)" in page.locator("#detail").inner_text()
    page.close()
