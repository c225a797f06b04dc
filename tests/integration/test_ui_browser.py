"""The web UI in a real browser: Debian's chromium, headless, driven by Playwright, against a
real `trustyard serve` with token auth and a cosign policy. JavaScript is off throughout: every
page reads (and the tag delete works) without it. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import asyncio
import os
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.integration.server import ServerProcess
from tests.ui_world import World, add_accounts, make_keys, populate, ui_config
from trustyard.config import Settings

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"

pytestmark = [pytest.mark.needs_chromium, pytest.mark.slow]


@pytest.fixture(scope="module")
def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run must install it")
        pytest.skip("chromium is not installed (scripts/install-deps.sh installs it)")
    return CHROMIUM


def _toml(values: dict[str, object]) -> str:
    auth = values["auth"]
    rule = values["policy"]["rules"][0]  # type: ignore[index]
    assert isinstance(auth, dict)
    keys = ", ".join(f'"{k}"' for k in rule["require"]["keys"])
    text = (
        f'[auth]\nmode = "{auth["mode"]}"\nbcrypt_cost = {auth["bcrypt_cost"]}\n\n'
        f'[[policy.rules]]\nname = "{rule["name"]}"\nrepositories = ["alice/*"]\n'
        f'require = {{ kind = "cosign", keys = [{keys}] }}\n'
    )
    tomllib.loads(text)  # well-formed
    return text


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, World]]:
    trusted, foreign = make_keys(tmp_path)
    data = tmp_path / "data"
    values = ui_config(data, tmp_path / "cosign.pub")
    config = tmp_path / "trustyard.toml"
    config.write_text(_toml(values))
    asyncio.run(add_accounts(Settings.model_validate({"data_dir": data})))
    server = ServerProcess(
        data, extra_env={"TRUSTYARD_CONFIG": str(config)}, ready_statuses=(401,)
    ).start()

    async def fill() -> World:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await populate(client, trusted, foreign)

    try:
        yield server, asyncio.run(fill())
    finally:
        server.stop()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_log_in_search_open_images_see_signatures_and_verdict_delete_a_tag(
    chromium: str, ui_server: tuple[ServerProcess, World]
) -> None:
    server, world = ui_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(
            java_script_enabled=False, viewport={"width": 1280, "height": 900}
        )
        page = context.new_page()
        try:
            page.goto(server.url + "/ui/")
            expect(page.locator("ul.repos")).to_contain_text("public/base")
            expect(page.locator("main")).not_to_contain_text("alice/app")

            page.goto(server.url + "/ui/login")
            page.fill('input[name="username"]', "alice")
            page.fill('input[name="password"]', "alice-pw")
            shot(page, "login")
            page.click('form.login button[type="submit"]')
            expect(page.locator("header .who")).to_have_text("alice")
            expect(page.locator("ul.repos")).not_to_contain_text("bob/secret")

            page.fill('header input[name="q"]', "app")
            page.press('header input[name="q"]', "Enter")
            expect(page.locator("h1")).to_contain_text("matching “app”")
            expect(page.locator("ul.repos li")).to_have_count(1)
            shot(page, "search")
            page.click("text=alice/app")
            expect(page.locator("table.tags")).to_contain_text("linux/amd64, linux/arm64")
            shot(page, "repository")

            page.click('table.tags a:text-is("signed")')
            expect(page.locator("#verdict")).to_contain_text("Would be served")
            expect(page.locator("#verdict")).to_contain_text("cosign-required")
            verified = page.locator("tr.sig.verified")
            expect(verified).to_contain_text("verified")
            expect(verified).to_contain_text("signature verified")
            expect(page.locator("#pull")).to_contain_text(f"@{world.signed}")
            shot(page, "image-verified")

            page.go_back()
            page.click('table.tags a:text-is("forged")')
            expect(page.locator("#verdict")).to_contain_text("Would be refused")
            failed = page.locator("tr.sig.failed")
            expect(failed).to_contain_text("failed")
            expect(failed).to_contain_text("no cosign signature by a trusted key")
            shot(page, "image-failed")

            page.goto(server.url + "/ui/repositories/alice/app")
            row = page.locator("table.tags tr", has=page.locator('a:text-is("unsigned")'))
            row.locator("a.danger").click()
            expect(page.locator("h1")).to_contain_text("Delete tag alice/app:unsigned?")
            shot(page, "delete-confirm")
            page.click("button.danger")
            expect(page.locator("h1")).to_have_text("alice/app")
            expect(page.locator('table.tags a:text-is("unsigned")')).to_have_count(0)
            expect(page.locator('table.tags a:text-is("signed")')).to_have_count(1)

            # another user's private repository is a 404 in the browser too
            response = page.goto(server.url + "/ui/repositories/bob/secret")
            assert response is not None and response.status == 404

            # log out; an administrator sees the accounts, rules and audit log, and a GC preview
            page.goto(server.url + "/ui/")
            page.click('header button:text-is("Log out")')
            expect(page.locator("header")).to_contain_text("Log in")
            page.goto(server.url + "/ui/login")
            page.fill('input[name="username"]', "root")
            page.fill('input[name="password"]', "root-pw")
            page.click('form.login button[type="submit"]')
            page.click('header a:text-is("Admin")')
            expect(page.locator("#accounts")).to_contain_text("bob")
            expect(page.locator("#acls")).to_contain_text("public/*")
            shot(page, "admin")
            page.click("text=Garbage collection preview")
            expect(page.locator("main")).to_contain_text("nothing was removed")
            shot(page, "gc-preview")
        finally:
            browser.close()
    r = httpx.get(f"{server.url}/v2/alice/app/tags/list")
    assert r.status_code == 401  # the registry still wants a token; the UI changed nothing there
