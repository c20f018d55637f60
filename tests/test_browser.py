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
