// dicomnode worklist: re-fetch the rows (server-rendered) every few seconds.
// The session cookie goes along; if it is no longer valid the page reloads to the login form.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh-seconds") || "10", 10);
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
        if (fresh) { current.replaceWith(fresh); }
      })
      .catch(function () { /* the node may be restarting: try again at the next tick */ });
  }
  if (seconds > 0) { window.setInterval(refresh, seconds * 1000); }
}());
