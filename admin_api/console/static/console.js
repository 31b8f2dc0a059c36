// maintd console: the few things the server cannot render. Times into the browser's
// time zone (the UTC offset on hover), countdowns, and the zone itself as a cookie for
// the calendar's days. htmx does the rest (partial refreshes, live run pages).
(function () {
  "use strict";
  var pad = function (n) { return String(n).padStart(2, "0"); };

  function offset(date) {
    var minutes = -date.getTimezoneOffset();
    var sign = minutes >= 0 ? "+" : "-";
    minutes = Math.abs(minutes);
    return "UTC" + sign + pad(Math.floor(minutes / 60)) + ":" + pad(minutes % 60);
  }

  function local(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function localize(root) {
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date)) return;
      el.textContent = local(date);
      el.title = local(date) + " " + offset(date) + " (" + el.getAttribute("datetime") + ")";
      el.setAttribute("data-local", "");
    });
    // A strip's or calendar's cell: its words as the tooltip too.
    root.querySelectorAll("a.cell").forEach(function (el) { el.title = el.textContent.trim(); });
  }

  function spell(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d " + pad(Math.floor(s % 86400 / 3600)) + "h";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-until]").forEach(function (el) {
      var left = (new Date(el.getAttribute("data-until")) - now) / 1000;
      el.textContent = left > 0 ? "in " + spell(left) : "due now";
    });
  }

  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) document.cookie = "maintd_tz=" + zone + "; path=/ui; SameSite=Strict";
  } catch (e) { /* the calendar then counts days in the daemon's zone */ }

  document.addEventListener("DOMContentLoaded", function () {
    localize(document); tick();
    // The calendar's newest days are on the right: on a narrow screen, show them first.
    document.querySelectorAll(".calendar-wrap").forEach(function (el) { el.scrollLeft = el.scrollWidth; });
  });
  document.addEventListener("htmx:afterSettle", function (event) { localize(event.target); tick(); });
  // Out-of-band log lines land outside the swapped element.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    localize(event.detail.target || document);
    var empty = document.getElementById("log-empty");
    if (empty && document.querySelector("#log-lines li")) empty.remove();
  });
  setInterval(tick, 1000);
})();
