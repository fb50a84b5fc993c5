// dicomnode worklist: re-fetch the rows (server-rendered) every few seconds, and move through
// them with the keyboard (j / ArrowDown: next, k / ArrowUp: previous, Enter / o: open).
// The session cookie goes along; if it is no longer valid the page reloads to the login form.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh-seconds") || "10", 10);
  var selectedUid = null;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("#rows tr.study")); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-selected"); });
    if (!row) { selectedUid = null; return; }
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    selectedUid = row.getAttribute("data-study-uid");
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.findIndex(function (r) { return r.getAttribute("data-study-uid") === selectedUid; });
    var next = index < 0 ? (step > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[next]);
  }

  function open() {
    var row = rows().find(function (r) { return r.getAttribute("data-study-uid") === selectedUid; });
    var link = row && row.querySelector("a.open-link");
    if (link) { link.click(); }
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var tag = target && target.tagName;
    if (event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || tag === "BUTTON") { return; }
    if (tag === "A" && event.key === "Enter") { return; }  // a focused link opens itself
    if (event.key === "j" || event.key === "ArrowDown") { move(1); event.preventDefault(); }
    else if (event.key === "k" || event.key === "ArrowUp") { move(-1); event.preventDefault(); }
    else if ((event.key === "Enter" || event.key === "o") && selectedUid) { open(); event.preventDefault(); }
    else if (event.key === "Escape") { select(null); }
  });

  document.addEventListener("click", function (event) {
    var row = event.target && event.target.closest ? event.target.closest("#rows tr.study") : null;
    if (row && !(event.target.closest("a"))) { select(row); }
  });

  function refresh() {
    if (document.hidden) { return; }
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "rows");
    fetch(url.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        var current = document.getElementById("results");
        if (!html || !current) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("results");
        if (!fresh) { return; }
        current.replaceWith(fresh);
        // The selection stays on the same study (it may have moved in the reading order).
        var kept = rows().find(function (r) { return r.getAttribute("data-study-uid") === selectedUid; });
        if (kept) { kept.classList.add("selected"); kept.setAttribute("aria-selected", "true"); }
      })
      .catch(function () { /* the node may be restarting: try again at the next tick */ });
  }
  if (seconds > 0) { window.setInterval(refresh, seconds * 1000); }
}());
