// The review console's one script (no framework, no build step; the pages work without it).
// 1. An element with data-refresh="<url>" reloads its content from that URL every
//    data-every seconds (the dashboard's panel): a same-origin GET with the session cookie.
// 2. A form submits once: a second click while the first submission is on its way is
//    ignored here (the server runs each form's action once anyway: its idempotency key).
// 3. A page the browser restores from its back/forward cache (Back after an action, or
//    after a submission that never reached the server) is loaded afresh: its state may
//    be stale and its forms already marked sent, which would ignore every click.
(function () {
  "use strict";
  function refresh(el) {
    var every = (parseFloat(el.getAttribute("data-every")) || 5) * 1000;
    setInterval(function () {
      fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
        .then(function (r) {
          if (r.redirected || !r.ok) { return null; }
          return r.text();
        })
        .then(function (html) { if (html !== null) { el.innerHTML = html; } })
        .catch(function () {});
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
