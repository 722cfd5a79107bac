"""Every page in a real Chromium at a phone's width and a laptop's, in light and dark:
nothing scrolls sideways, the header folds into a menu that works without JavaScript, the
theme follows the system and the toggle, and axe-core finds no serious or critical problem.

The site is the demo's history under debug off (tests/ui/conftest.py), so the 404 page is
rtdash's own.
"""

from __future__ import annotations

import pytest

from tests.ui.conftest import WIDTHS, new_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

NOT_FOUND = "/no-such-page/"
SIDEWAYS = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
# A run's numbers (tokens, cost, duration): the text of each cell sits on one line.
NUMBERS_ON_ONE_LINE = """() => [...document.querySelectorAll("table.runs tr.run td.num")]
  .filter((cell) => {
    const range = document.createRange();
    range.selectNodeContents(cell);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
  }).map((cell) => cell.textContent)"""
BACKGROUND = "getComputedStyle(document.body).backgroundColor"
# The first agent's bar (not a day without spend, drawn only when the period's first day has none).
FIRST_BAR = "getComputedStyle(document.querySelector('svg.chart rect.series-0')).fill"


def _open(page, site, path: str, status: int = 200) -> None:
    response = page.goto(site.url + path)
    assert response is not None and response.status == status, (path, site.log()[-2000:])


def _is_dark(rgb: str) -> bool:
    red, green, blue = (int(part) for part in rgb[rgb.index("(") + 1 : -1].split(",")[:3])
    return red + green + blue < 3 * 80


def test_no_page_scrolls_sideways(demo_site, browser):
    too_wide = []
    for width in WIDTHS:
        too_wide += _check_sideways(demo_site, browser, width)
    assert too_wide == [], "\n".join(too_wide)


def _check_sideways(demo_site, browser, width: int) -> list[str]:
    """The pages that scroll sideways at `width`, each with how far."""
    page = new_page(browser, demo_site, width=width)
    too_wide = []
    for path in [*demo_site.pages, NOT_FOUND]:
        _open(page, demo_site, path, 404 if path == NOT_FOUND else 200)
        if (overflow := page.evaluate(SIDEWAYS)) > 0:
            too_wide.append(f"{path} scrolls {overflow} px sideways at {width} px")
    _open(page, demo_site, "/runs/")
    assert page.locator("table.runs tr.run").count() > 10
    if width == 1280:
        assert page.evaluate(NUMBERS_ON_ONE_LINE) == []
    page.context.close()

    anonymous = new_page(browser, demo_site, width=width, login=False)
    _open(anonymous, demo_site, "/login/")
    assert anonymous.evaluate(SIDEWAYS) <= 0
    anonymous.context.close()
    return too_wide


def test_the_header_folds_into_a_menu_that_works_without_javascript(demo_site, browser):
    context = browser.new_context(viewport={"width": 390, "height": 800}, java_script_enabled=False)
    page = context.new_page()
    _open(page, demo_site, "/login/")
    page.get_by_label("Username").fill("demo")
    page.get_by_label("Password").fill("demo")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{demo_site.url}/")
    nav = page.get_by_role("navigation", name="Main")
    assert not nav.is_visible()  # folded on a phone
    page.get_by_text("Menu", exact=True).click()
    assert nav.is_visible()
    nav.get_by_role("link", name="Runs").click()
    page.wait_for_url(f"{demo_site.url}/runs/")
    context.close()

    wide = new_page(browser, demo_site, width=1280)
    assert wide.get_by_role("navigation", name="Main").is_visible()  # open on a laptop
    assert not wide.get_by_text("Menu", exact=True).is_visible()
    wide.context.close()


def test_dark_mode_follows_the_system_and_the_toggle(demo_site, browser):
    dark = new_page(browser, demo_site, dark=True)
    _open(dark, demo_site, "/reports?period=30d")
    assert _is_dark(dark.evaluate(BACKGROUND))
    dark_bar = dark.evaluate(FIRST_BAR)
    dark.context.close()

    light = new_page(browser, demo_site)
    _open(light, demo_site, "/reports?period=30d")
    assert not _is_dark(light.evaluate(BACKGROUND))
    assert light.evaluate(FIRST_BAR) != dark_bar  # the chart's colours follow the theme
    toggle = light.get_by_role("button", name="Dark mode")
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    assert _is_dark(light.evaluate(BACKGROUND))
    assert toggle.get_attribute("aria-pressed") == "true"
    assert light.evaluate(FIRST_BAR) == dark_bar

    # Remembered by this browser: on the next page, and after a reload.
    _open(light, demo_site, "/runs/")
    assert light.evaluate("document.documentElement.dataset.theme") == "dark"
    assert _is_dark(light.evaluate(BACKGROUND))
    light.get_by_role("button", name="Dark mode").click()
    light.reload()
    assert not _is_dark(light.evaluate(BACKGROUND))
    light.context.close()


def test_axe_finds_no_serious_problem_on_any_page(demo_site, browser):
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()  # axe-core as bundled in the package: nothing is downloaded
    problems = []
    for width, dark in [(1280, False), (1280, True), (390, False), (390, True)]:
        problems += _axe_every_page(axe, demo_site, browser, width, dark)
    assert problems == []


def _axe_every_page(axe, demo_site, browser, width: int, dark: bool) -> list[str]:
    page = new_page(browser, demo_site, width=width, dark=dark)
    problems = []
    for path in [*demo_site.pages, NOT_FOUND]:
        _open(page, demo_site, path, 404 if path == NOT_FOUND else 200)
        problems += _serious(axe, page, f"{path} at {width} px{' dark' if dark else ''}")
    page.context.close()
    anonymous = new_page(browser, demo_site, width=width, dark=dark, login=False)
    _open(anonymous, demo_site, "/login/")
    problems += _serious(axe, anonymous, f"/login/ at {width} px{' dark' if dark else ''}")
    anonymous.context.close()
    return problems


def _serious(axe, page, path: str) -> list[str]:
    violations = axe.run(page).response["violations"]
    return [
        f"{path}: {v['id']} ({v['impact']}) at {[node['target'] for node in v['nodes'][:3]]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
