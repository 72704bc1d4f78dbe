"""The review console in a real headless Chromium (Debian's ``chromium`` +
``chromium-driver``, driven by Selenium; nothing is downloaded), served by a real
``workmanager serve`` process over PostgreSQL, with real Celery workers and agent consumers
(the ``make_stack`` fixture of tests/celery). Skipped locally when Chromium, PostgreSQL or
Redis is missing; a failure under CI.

The screenshots in docs/img/ (review queue, an order with its diff, the dashboard) are
taken here; ``WM_SCREENSHOTS_DIR`` writes them elsewhere.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tasks.producer import enqueue_order
from workmanager import AgentInfo, NotFound, Registry, Settings, WorkManager
from workmanager.db.models import Event, Order
from workmanager.services.tokens import TokenService

from ..celery.conftest import UI_BROKER_DB, Stack, make_stack  # noqa: F401 - the fixture
from ..conftest import need
from .types import register

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("WM_SCREENSHOTS_DIR") or ROOT / "docs" / "img")
TYPES = "tests.support.pipeline,tests.ui.types"


@pytest.fixture
def broker_db() -> int:
    """This module runs beside the Celery tests under ``make test``: a broker db of its own."""
    return UI_BROKER_DB


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        need(
            "Chromium",
            f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)",
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        need("Chromium", f"selenium is not installed: {exc}")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Console:
    """A ``workmanager serve`` process of the stack, and the browser pointed at it."""

    def __init__(self, stack: Stack, driver: Any) -> None:
        self.stack = stack
        self.driver = driver
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        registry = Registry()
        register(registry)
        self.wm = WorkManager(Settings.from_env(stack.env), registry=registry)
        cli = str(Path(sys.executable).parent / "workmanager")
        stack.start("api", [cli, "serve", "--host", "127.0.0.1", "--port", str(self.port)])
        stack.wait_for(self._up, 30, "the API server to answer")
        driver.delete_all_cookies()

    def _up(self) -> bool:
        try:
            return httpx.get(self.base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def token(self, name: str, scopes: str) -> str:
        plaintext, _ = TokenService(self.wm.ctx).create(f"{name}-{uuid.uuid4().hex[:6]}", scopes)
        return plaintext

    def sign_in(self, token: str, path: str = "/ui/queue") -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()
        self.open(path)  # no session: the sign-in page, which comes back here after
        assert "/ui/login" in self.driver.current_url
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.driver.find_element(By.ID, "sign-in").click()
        self.wait(lambda: path in self.driver.current_url, "signed in")

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        return self.stack.wait_for(predicate, timeout, what)

    def text(self, element_id: str) -> str:
        """The element's text; one the dashboard's refresh replaced between the find and
        the read is found again (a StaleElementReferenceException failed a run)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By

        for _ in range(3):
            try:
                return str(self.driver.find_element(By.ID, element_id).text)
            except StaleElementReferenceException:
                continue
        return str(self.driver.find_element(By.ID, element_id).text)

    def has(self, element_id: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.driver.find_elements(By.ID, element_id))

    def has_css(self, selector: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        height, chrome = self.driver.execute_script(
            "return [document.documentElement.scrollHeight, "
            "window.outerHeight - window.innerHeight]"
        )
        self.driver.set_window_size(1360, min(int(height) + max(int(chrome), 140) + 8, 2400))
        try:
            assert self.driver.save_screenshot(str(SHOTS / name))
        finally:
            self.driver.set_window_size(1360, 1000)

    def state(self, order_id: uuid.UUID) -> str:
        try:
            return self.wm.queries.order_state(order_id)
        except NotFound:  # enqueue_order returns before the worker created it
            return ""

    def events(self, order_id: uuid.UUID, event: str, item_id: uuid.UUID | None = None) -> int:
        with self.wm.db.transaction() as s:
            stmt = select(func.count()).select_from(Event)
            stmt = stmt.where(Event.order_id == order_id, Event.event == event)
            if item_id is not None:
                stmt = stmt.where(Event.item_id == item_id)
            return int(s.scalar(stmt) or 0)

    def post_from_page(self, path: str, fields: dict[str, str]) -> int:
        """POST a form body from the page's own origin (what a forged form would send,
        with the session cookie), returning the status."""
        script = """
            const [path, fields, done] = arguments;
            fetch(path, {method: 'POST', body: new URLSearchParams(fields),
                         credentials: 'same-origin', redirect: 'manual'})
              .then(r => done(r.status)).catch(e => done(String(e)));
        """
        return int(self.driver.execute_async_script(script, path, fields))


@pytest.fixture
def console(make_stack: Callable[..., Stack], browser: Any) -> Iterator[Console]:  # noqa: F811
    stack = make_stack(order_types=TYPES, retry_backoff_seconds="0", retry_jitter_seconds="0")
    made = Console(stack, browser)
    yield made
    made.wm.close()


def start_workers(console: Console) -> None:
    stack = console.stack
    stack.worker(concurrency=2)
    stack.start(
        "agent",
        [
            sys.executable,
            "-m",
            "workers.agent",
            "--type",
            "ui.title",
            "--handler",
            "tests.ui.types:title_handler",
            "--concurrency",
            "2",
            "--agent-id",
            "writer-1",
        ],
        WORK_MANAGER_AGENT_MODEL="gpt-test",
        WORK_MANAGER_AGENT_VERSION="1.2.0",
    )


def test_review_approve_and_rework_through_real_workers(console: Console) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    start_workers(console)
    app = console.stack.app
    first = enqueue_order("ui.title", {"docs": ["intro", "summary"]}, app=app)
    second = enqueue_order("ui.title", {"docs": ["appendix"]}, app=app)
    for order_id in (first, second):
        console.wait(lambda o=order_id: console.state(o) == "submitted", f"{order_id} submitted")

    console.sign_in(console.token("reviewer", "view,approve,reject"))
    assert console.text("queue-total") == "2 waiting"
    rows = console.driver.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
    with console.wm.db.transaction() as s:  # oldest submission first
        oldest = s.scalars(
            select(Order.id).where(Order.id.in_([first, second])).order_by(Order.submitted_at)
        ).all()
    assert [r.get_attribute("data-order") for r in rows] == [str(o) for o in oldest]
    assert all("writer-1 · 1.2.0 · gpt-test" in r.text for r in rows)
    console.shot("console-queue.png")

    # the order page: preview before approval, results and provenance per item
    rows[oldest.index(first)].find_element(By.TAG_NAME, "a").click()
    console.wait(lambda: console.has("approve"), "the order page")
    assert "Preview: what apply would change" in console.driver.page_source
    assert "A title for intro" in console.text("items")
    assert "gpt-test" in console.text("items")
    # a double click approves once
    ActionChains(console.driver).double_click(
        console.driver.find_element(By.ID, "approve")
    ).perform()
    console.wait(lambda: console.state(first) == "completed", "the order applied by the worker")
    assert console.events(first, "approved") == 1
    console.open(f"/ui/orders/{first}")
    assert console.text("order-state") == "completed"
    diff = console.text("diff")
    assert "untitled intro" in diff and "A title for intro" in diff
    assert not console.has("approve")
    console.shot("console-order-diff.png")

    # reject the second for rework: its item goes back to the agents and is leased again
    console.open(f"/ui/orders/{second}")
    item_id = uuid.UUID(
        console.driver.find_element(By.CSS_SELECTOR, "article.item").get_attribute("data-item")
    )
    console.driver.find_element(By.ID, "reason").send_keys("make it shorter")
    assert console.driver.find_element(By.ID, "allow-rework").is_selected()
    console.driver.find_element(By.ID, "reject").click()
    console.wait(lambda: console.has("flash"), "the page after reject")
    console.wait(
        lambda: console.events(second, "leased", item_id) == 2, "the reworked item leased again"
    )
    console.open(f"/ui/orders/{second}")
    timeline = [
        e.get_attribute("data-event")
        for e in console.driver.find_elements(By.CSS_SELECTOR, "#timeline tr.event")
    ]
    assert "rework" in timeline
    assert timeline.index("leased", timeline.index("rework")) > timeline.index("rework")
    assert "make it shorter" in console.text("timeline")

    console.open("/ui/dashboard")
    assert "writer-1" in console.text("agents") and "gpt-test" in console.text("agents")
    assert int(console.text("orders-completed")) >= 1
    console.shot("console-dashboard.png")
    # it refreshes by itself: new work shows up without reloading the page
    assert not console.has_css('#depth tr[data-type="ui.plain"]')
    console.wm.propose("ui.plain", {"n": 1})
    console.wait(
        lambda: console.has_css('#depth tr[data-type="ui.plain"]'), "the dashboard refreshed", 15
    )
    assert console.driver.current_url.endswith("/ui/dashboard")


def test_a_view_token_sees_no_actions_and_forged_posts_change_nothing(console: Console) -> None:
    from selenium.webdriver.common.by import By

    agent = AgentInfo(id="writer-2", model_name="gpt-test")
    order_id = console.wm.propose("ui.title", {"docs": ["a"]})
    lease = console.wm.agent.checkout(agent, order_id=order_id)
    assert lease is not None
    console.wm.agent.submit(lease, {"title": "T"}, agent=agent)
    assert console.state(order_id) == "submitted"

    console.sign_in(console.token("viewer", "view"), f"/ui/orders/{order_id}")
    assert console.text("order-state") == "submitted"
    assert not console.has("approve") and not console.has("reject") and not console.has("actions")

    csrf = console.driver.find_element(By.NAME, "csrf").get_attribute("value")
    key = uuid.uuid4().hex
    # the scope is missing: refused even with the session's CSRF token
    status = console.post_from_page(f"/ui/orders/{order_id}/approve", {"csrf": csrf, "key": key})
    assert status == 403
    assert console.state(order_id) == "submitted"

    console.sign_in(console.token("reviewer", "view,approve,reject"), f"/ui/orders/{order_id}")
    assert console.has("approve")
    key = console.driver.find_element(By.CSS_SELECTOR, "#approve-form [name=key]")
    # no CSRF token (and a wrong one): refused, nothing approved
    path = f"/ui/orders/{order_id}/approve"
    assert console.post_from_page(path, {"key": key.get_attribute("value")}) == 403
    assert console.post_from_page(path, {"key": uuid.uuid4().hex, "csrf": "forged"}) == 403
    assert console.state(order_id) == "submitted"
    assert console.events(order_id, "approved") == 0
    # the page still works with its own form
    console.open(f"/ui/orders/{order_id}")
    console.driver.find_element(By.ID, "approve").click()
    console.wait(lambda: console.state(order_id) != "submitted", "approved through the form")
    assert console.events(order_id, "approved") == 1
    # Back: the page before the approval, which Chromium restores from its back/forward
    # cache (stale, its form marked sent: every click ignored), is loaded afresh
    console.wait(lambda: console.has("flash"), "the page after approve")
    console.driver.back()

    def fresh() -> bool:
        try:
            return console.text("order-state") == "approved" and not console.has("approve")
        except Exception:  # the page is being replaced
            return False

    console.wait(fresh, "the page before the approval, loaded afresh", 15)


def test_the_dashboard_says_when_it_stops_refreshing(console: Console) -> None:
    """The dashboard refreshes every 5 s; when a refresh failed (the session ended, the
    server gone) it kept the old figures with no word, so a frozen board read as a
    quiet queue. It says since when it is stale, and why; paused, it says so."""
    from selenium.webdriver.common.by import By

    name = f"watcher-{uuid.uuid4().hex[:6]}"
    token, _ = TokenService(console.wm.ctx).create(name, "view")
    console.sign_in(token, "/ui/dashboard")
    assert not console.has("refresh-notice")
    TokenService(console.wm.ctx).revoke(name)
    console.wait(lambda: console.has("refresh-notice"), "the stale notice", 15)
    said = console.text("refresh-notice")
    assert said.startswith("Not updated since") and "your session has ended" in said, said
    assert "Sign in again" in said

    console.sign_in(console.token("watcher", "view"), "/ui/dashboard")
    assert not console.has("refresh-notice")
    console.stack.kill("api")
    console.wait(lambda: console.has("refresh-notice"), "the stale notice", 15)
    assert "the server does not answer" in console.text("refresh-notice")
    console.driver.find_element(By.ID, "refresh-pause").click()  # no more "still trying"
    assert console.text("refresh-notice").endswith("refreshing is paused.")


def test_the_console_works_for_the_keyboard_a_screen_reader_and_a_narrow_screen(
    console: Console,
) -> None:
    """An accessibility pass: the dashboard's refresh threw the keyboard's place back to
    the top of the page every 5 s, with no way to pause it; the lease's "Extend" field,
    the reject reason and the filters had no label (a placeholder, or a loose "s"); at
    320 px wide the header's Sign out and the reject form's button were off screen."""
    from selenium.webdriver.common.by import By

    wm = console.wm
    waiting = wm.propose("ui.plain", {})
    lease = wm.agent.checkout("agent-k", order_id=waiting)
    assert lease is not None
    wm.agent.submit(lease, {"answer": "x" * 400})  # one long line: it must not widen the page
    held = wm.propose("ui.plain", {})
    holding = wm.agent.checkout("agent-k", order_id=held)
    assert holding is not None
    console.sign_in(console.token("a11y", "view,approve,reject,admin"), "/ui/dashboard")
    driver = console.driver

    def named(element_id: str) -> str:
        found = driver.find_elements(By.CSS_SELECTOR, f"label[for='{element_id}']")
        return str(found[0].get_attribute("textContent")).strip() if found else ""

    # the refresh keeps the keyboard inside the panel, and can be paused
    driver.execute_script(
        "const a = document.createElement('a'); a.href = '#probe'; a.id = 'probe';"
        " a.textContent = 'probe'; document.getElementById('dashboard').prepend(a); a.focus();"
    )
    before = console.text("board-now")
    console.wait(lambda: console.text("board-now") != before, "a refresh", 15)
    assert driver.execute_script("return document.activeElement.id") == "dashboard"
    pause = driver.find_element(By.ID, "refresh-pause")
    pause.click()
    assert pause.get_attribute("aria-pressed") == "true"
    assert pause.text == "Resume refreshing"

    # narrow: a wide table scrolls in its box, and stays scrolled through a refresh
    pause.click()  # resume
    driver.set_window_size(320 + 16, 900)
    try:
        box = "return document.querySelector('#depth').parentNode"
        driver.execute_script(box + ".scrollLeft = 60")
        scrolled = int(driver.execute_script(box + ".scrollLeft"))
        assert scrolled > 0  # it does scroll: wider than the screen
        before = console.text("board-now")
        console.wait(lambda: console.text("board-now") != before, "a refresh", 15)
        assert int(driver.execute_script(box + ".scrollLeft")) == scrolled
    finally:
        driver.set_window_size(1360, 1000)

    # every field has a name a screen reader reads
    console.open(f"/ui/items/{holding.item_id}")
    assert "seconds" in named("extend-seconds")
    console.open(f"/ui/orders/{waiting}")
    assert "rejected" in named("reason")
    console.open("/ui/orders")
    for field in ("f-filter-state", "f-filter-type", "f-sort"):
        assert named(field), field

    # 320 px wide: the controls stay on the screen, the page does not scroll sideways
    driver.set_window_size(320 + 16, 900)  # the window's frame: a viewport about 320 wide
    try:
        console.open(f"/ui/orders/{waiting}")
        width = int(driver.execute_script("return document.documentElement.clientWidth"))
        page = int(driver.execute_script("return document.documentElement.scrollWidth"))
        assert page <= width + 1, (page, width)
        for selector in ("#reject", "#approve", ".signout button", ".top nav a:last-child"):
            right = driver.execute_script(
                "return document.querySelector(arguments[0]).getBoundingClientRect().right",
                selector,
            )
            assert right <= width + 1, (selector, right, width)
    finally:
        driver.set_window_size(1360, 1000)
