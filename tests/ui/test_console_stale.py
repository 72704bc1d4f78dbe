"""The console's forms act on what their page showed, and its pages show what agents
wrote without letting it act (found by a browser pass over the console)."""

from __future__ import annotations

import re

import pytest

from workmanager import WorkManager
from workmanager.display import shown

from .test_console import AGENT, client_for, field, sign_in, submitted_order


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_review_form_from_before_a_resubmission_does_nothing(
    wm: WorkManager, tokens: dict[str, str], action: str
) -> None:
    """Reviewer B's page showed the first results; A sent the order back, the agent
    submitted other results. B's Approve approved (and applied) what B never saw; B's
    Reject rejected it. Both are refused now, with a page saying to reload."""
    order_id = submitted_order(wm)
    b = sign_in(client_for(wm), tokens["reviewer"])
    stale = b.get(f"/ui/orders/{order_id}").text
    form = f"{action}-form"
    data = {
        "csrf": field(stale, "csrf", form),
        "key": field(stale, "key", form),
        "seen": field(stale, "seen", form),
    }
    if action == "reject":  # what B typed is shown back, not lost with the page
        data["reason"] = "the <title> is wrong"
    a = sign_in(client_for(wm), tokens["reviewer"])
    page = a.get(f"/ui/orders/{order_id}").text
    rework = {
        "csrf": field(page, "csrf", "reject-form"),
        "key": field(page, "key", "reject-form"),
        "allow_rework": "1",
        "reason": "again",
    }
    assert a.post(f"/ui/orders/{order_id}/reject", data=rework).status_code == 303
    while (lease := wm.agent.checkout(AGENT, order_id=order_id)) is not None:
        wm.agent.submit(lease, {"title": "DROP TABLE users"}, evidence={"url": "u"}, agent=AGENT)
    assert wm.queries.order_state(order_id) == "submitted"

    answer = b.post(f"/ui/orders/{order_id}/{action}", data=data)
    assert answer.status_code == 409, answer.text[:500]
    assert "changed since the page was drawn" in answer.text
    # a way back to the page the form came from (an accessibility pass: only the queue)
    assert f'<a href="/ui/orders/{order_id}" id="error-back">' in answer.text
    typed = 'readonly rows="3" cols="60">the &lt;title&gt; is wrong</textarea>'
    assert (typed in answer.text) == (action == "reject"), answer.text
    assert wm.queries.order_state(order_id) == "submitted"
    fresh = b.get(f"/ui/orders/{order_id}").text  # the page as it is now acts
    data = {**data, **{k: field(fresh, k, form) for k in ("csrf", "key", "seen")}}
    assert b.post(f"/ui/orders/{order_id}/{action}", data=data).status_code == 303
    assert wm.queries.order_state(order_id) == ("approved" if action == "approve" else "rejected")


@pytest.mark.parametrize("action", ["release", "extend"])
def test_a_lease_form_acts_on_the_lease_its_page_showed_only(
    wm: WorkManager, tokens: dict[str, str], action: str
) -> None:
    """The item page showed agent X's lease; X released, agent Y leased the item. The
    operator's Release ended Y's lease (Y lost its work) and Extend extended it."""
    order_id = wm.propose("ui.plain", {"n": 1})
    x = wm.agent.checkout("agent-x", order_id=order_id)
    assert x is not None
    operator = sign_in(client_for(wm), tokens["operator"])
    page = operator.get(f"/ui/items/{x.item_id}").text
    data = {"csrf": field(page, "csrf"), "fence": field(page, "fence")}
    wm.agent.release(x)
    y = wm.agent.checkout("agent-y", order_id=order_id)
    assert y is not None and y.item_id == x.item_id
    before = wm.queries.item(y.item_id)

    answer = operator.post(f"/ui/items/{x.item_id}/{action}", data=data, follow_redirects=True)
    assert answer.status_code == 200
    assert "Nothing was done: the lease this page showed has ended" in answer.text
    after = wm.queries.item(y.item_id)
    assert after["leased_by_agent_id"] == "agent-y"
    assert after["lease_expires_at"] == before["lease_expires_at"]
    wm.agent.heartbeat(y)  # Y still holds it

    page = operator.get(f"/ui/items/{y.item_id}").text  # drawn again: it acts on Y's
    data = {"csrf": field(page, "csrf"), "fence": field(page, "fence")}
    answer = operator.post(f"/ui/items/{y.item_id}/{action}", data=data, follow_redirects=True)
    done = {"release": "released", "extend": "extended"}[action]
    assert f"Done: {done}: 1." in answer.text, answer.text[:2000]


def test_agent_text_cannot_reorder_or_bloat_a_page(wm: WorkManager, tokens: dict[str, str]) -> None:
    """A result holding U+202E showed ``account 9999-1000`` for ``0001-9999``; an event's
    details were printed whole (a 1 MB failure message per event: a 40 MB page) and as
    ``\\u0627…`` escapes for Arabic or emoji."""
    order_id = wm.propose("ui.title", {"docs": ["a", "b"]})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    wm.agent.fail(lease, {"code": "boom", "message": "\u0627\u0644\u0633 😀 " + "x" * 1_000_000})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    title = "pay to account \u202e0001-9999\u202c ok"
    wm.agent.submit(lease, {"title": title}, evidence={"url": "u"}, notes="n\u2066x", agent=AGENT)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    for path in (f"/ui/orders/{order_id}", f"/ui/items/{lease.item_id}"):
        page = reviewer.get(path)
        assert page.status_code == 200
        assert len(page.text) < 300_000, (path, len(page.text))
        assert "\u202e" not in page.text and "\\u202e0001-9999\\u202c" in page.text, path
        assert "\u2066" not in page.text
        if "item" not in path:
            assert "\u0627\u0644\u0633 😀" in page.text  # other scripts as they are


def test_a_long_key_or_hidden_text_cannot_hide_what_is_approved(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """A console pass: a 30,000-character diff key pushed every row's before and after off
    the screen (a key is never cut), and a result holding Unicode's tag characters read
    ``approve`` while ``approve and DROP`` was stored (they were not escaped)."""
    long_key = "k" * 30_000
    order_id = wm.propose("ui.title", {"docs": [long_key]})
    lease = wm.agent.checkout(AGENT, order_id=order_id)
    assert lease is not None
    hidden = "approve" + "".join(chr(0xE0000 + ord(c)) for c in " and DROP")
    wm.agent.submit(lease, {"title": hidden + "\u200b"}, agent=AGENT)
    page = sign_in(client_for(wm), tokens["reviewer"]).get(f"/ui/orders/{order_id}").text
    assert "cut here: 500 of 30,000 characters shown" in page
    [key_cell] = re.findall(r'<td class="mono key">(.*?)<span', page, re.S)
    assert key_cell.startswith("k" * 500 + "\n… cut here"), key_cell[:600]
    assert chr(0xE0020) not in page and "\\U000e0020" in page
    assert "\u200b" not in page and "\\u200b" in page


def test_shown_escapes_controls_and_bidi_and_keeps_scripts() -> None:
    assert shown("a\x1b[2Jb\u202ec\u2067d\u200fe") == "a\\x1b[2Jb\\u202ec\\u2067d\\u200fe"
    assert shown("tab\tline\n\u0627\u0644 😀 ü") == "tab\tline\n\u0627\u0644 😀 ü"


def test_console_mistakes_are_pages_not_json_or_500s(
    wm: WorkManager, tokens: dict[str, str]
) -> None:
    """``items_page=²`` (a digit to ``isdigit``, not to ``int``) and ``fields[orders]``
    without ``id`` were 500s; an unknown console path the API's JSON; ``1e3`` in the
    Extend box (a number to the browser) a page showing pydantic's dump and the server's
    file path."""
    order_id = submitted_order(wm)
    reviewer = sign_in(client_for(wm), tokens["reviewer"])
    paged = reviewer.get(f"/ui/orders/{order_id}", params={"items_page": "²"})
    assert paged.status_code == 400 and "items_page must be a page number" in paged.text
    listed = reviewer.get("/ui/orders", params={"fields[orders]": "state,type"})
    assert listed.status_code == 200 and str(order_id)[:8] in listed.text
    for path in ("/ui/nope", "/ui/orders/x/y/z"):
        missing = reviewer.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("text/html"), path
    lease = wm.agent.checkout(AGENT, order_id=wm.propose("ui.plain", {"n": 1}))
    assert lease is not None
    operator = sign_in(client_for(wm), tokens["operator"])
    page = operator.get(f"/ui/items/{lease.item_id}").text
    answer = operator.post(
        f"/ui/items/{lease.item_id}/extend", data={"csrf": field(page, "csrf"), "seconds": "1e3"}
    )
    assert answer.status_code == 400 and "seconds:" in answer.text
    assert "File " not in answer.text and "loc" not in answer.text and ".py" not in answer.text
