// The review console's one script (no framework, no build step; the pages work without it).
// 1. An element with data-refresh="<url>" reloads its content from that URL every
//    data-every seconds (the dashboard's panel): a same-origin GET with the session cookie;
//    a refresh that fails says so above it (the session ended, the server not answering),
//    once, not at every try. A button before it pauses and resumes the refreshing, and a
//    refresh keeps the keyboard's place: the link or control that had the focus has it
//    again (a refresh took it away every few seconds, back to the top of the page), and
//    each wide table stays scrolled where it was.
// 2. A form submits once: a second click while the first submission is on its way is
//    ignored here (the server runs each form's action once anyway: its idempotency key).
// 3. A page the browser restores from its back/forward cache (Back after an action, or
//    after a submission that never reached the server) is loaded afresh: its state may
//    be stale and its forms already marked sent, which would ignore every click.
(function () {
  "use strict";
  // When a refresh fails the content stays as it was, and a notice above it says so: a
  // dashboard frozen in silence (a session ended, the server gone) read as a quiet queue.
  function notice(el, text, signIn) {
    var note = el.previousElementSibling;
    if (!note || note.id !== "refresh-notice") {
      if (text === null) { return; }
      note = document.createElement("p");
      note.id = "refresh-notice";
      note.className = "flash bad";
      note.setAttribute("role", "status");
      el.parentNode.insertBefore(note, el);
    }
    if (text === null) { note.remove(); return; }
    if (note.getAttribute("data-said") === text) { return; }  // said already: not again
    note.setAttribute("data-said", text);
    note.textContent = text + " ";
    if (signIn) {
      var link = document.createElement("a");
      link.href = "/ui/login?next=" + encodeURIComponent(window.location.pathname);
      link.textContent = "Sign in again";
      note.appendChild(link);
    }
  }
  // Where the keyboard was inside el: its id, a link's address, or the table a
  // scrolling box holds (Chrome lets the keyboard stop on a box that scrolls), to find it
  // again.
  function place(el) {
    var at = document.activeElement;
    if (!at || at === el || !el.contains(at)) { return null; }
    if (at.id) { return "#" + CSS.escape(at.id); }
    var href = at.getAttribute("href");
    if (href) { return at.tagName.toLowerCase() + '[href="' + CSS.escape(href) + '"]'; }
    var table = at.classList.contains("scroll") ? at.querySelector("table[id]") : null;
    return table ? "div.scroll:has(> #" + CSS.escape(table.id) + ")" : "";
  }
  // How far each scrolling box (by the id of its table) was scrolled, to scroll it back.
  function scrolled(el) {
    var at = {};
    el.querySelectorAll("div.scroll > table[id]").forEach(function (table) {
      at[table.id] = table.parentNode.scrollLeft;
    });
    return at;
  }
  function rescroll(el, at) {
    Object.keys(at).forEach(function (id) {
      var table = document.getElementById(id);
      if (table && el.contains(table)) { table.parentNode.scrollLeft = at[id]; }
    });
  }
  function restore(el, where) {
    if (where === null) { return; }
    var found = where ? el.querySelector(where) : null;
    if (!found) {  // gone with the refresh: the panel itself, not the top of the page
      el.setAttribute("tabindex", "-1");
      found = el;
    }
    found.focus({ preventScroll: true });
  }
  function pauser(el, paused) {
    var button = document.createElement("button");
    button.type = "button";
    button.id = "refresh-pause";
    button.textContent = "Pause refreshing";
    button.setAttribute("aria-pressed", "false");
    button.addEventListener("click", function () {
      var now = el.getAttribute("data-paused") !== "1";
      el.setAttribute("data-paused", now ? "1" : "");
      button.textContent = now ? "Resume refreshing" : "Pause refreshing";
      button.setAttribute("aria-pressed", now ? "true" : "false");
      if (now) { paused(); }
    });
    el.parentNode.insertBefore(button, el);
  }
  function refresh(el) {
    var every = (parseFloat(el.getAttribute("data-every")) || 5) * 1000;
    var since = new Date().toLocaleTimeString();
    pauser(el, function () {  // a notice shown says no more that it is still trying
      var note = el.previousElementSibling;
      var said = note && note.id === "refresh-notice" ? note.getAttribute("data-said") : "";
      if (said && said.indexOf("still trying.") >= 0) {
        notice(el, said.replace("still trying.", "refreshing is paused."), false);
      }
    });
    setInterval(function () {
      if (el.getAttribute("data-paused") === "1") { return; }
      var stale = "Not updated since " + since + ": ";
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) {
          if (r.redirected || r.status === 401) {
            notice(el, stale + "your session has ended.", true);
            return null;
          }
          if (!r.ok) {
            notice(el, stale + "the server answered " + r.status + "; still trying.", false);
            return null;
          }
          return r.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          var where = place(el), at = scrolled(el);
          el.innerHTML = html;
          rescroll(el, at);
          restore(el, where);
          since = new Date().toLocaleTimeString();
          notice(el, null, false);
        })
        .catch(function () {
          notice(el, stale + "the server does not answer; still trying.", false);
        });
    }, every);
  }
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { window.location.reload(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("form[method=post]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
        form.setAttribute("data-sent", "1");
      });
    });
  });
})();
