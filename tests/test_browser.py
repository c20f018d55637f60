"""The browser the page tests use: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

from typing import Any


def test_the_browser_runs_a_page_script(browser: Any) -> None:
    """A page's script runs and its console is captured (what the page tests rely on)."""
    page = browser.new_page()
    messages: list[str] = []
    page.on("console", lambda message: messages.append(message.text))
    page.set_content("<p id=out></p><script>out.textContent = 6 * 7; console.log('ran')</script>")
    assert page.text_content("#out") == "42"
    assert messages == ["ran"]
    page.close()


def test_the_browser_leaves_no_event_loop_running(browser: Any) -> None:
    """The fixture's Playwright stops after each test: asyncio.run() works after it."""
    assert browser.is_connected()


def test_asyncio_runs_after_a_browser_test() -> None:
    """(Runs after the tests above: a session-wide browser broke every asyncio.run().)"""
    import asyncio

    async def answer() -> int:
        return 42

    assert asyncio.run(answer()) == 42
