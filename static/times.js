// Moments in the viewer's time zone. The server writes each one as
// <time datetime="...Z" title="... UTC">... UTC</time>; this rewrites the text to the
// browser's local time and keeps the UTC time in the title (shown on hover). Without
// JavaScript the UTC text stays, and the page's note says so.
(function () {
  "use strict";
  function pad(n) { return String(n).padStart(2, "0"); }
  function localText(date, style) {
    var day = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
    if (style === "date") { return day; }
    var text = day + " " + pad(date.getHours()) + ":" + pad(date.getMinutes());
    if (style === "seconds") { text += ":" + pad(date.getSeconds()); }
    return text;
  }
  function zoneName() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { return ""; }
  }
  function rewrite(root) {
    var times = (root || document).querySelectorAll("time[datetime]:not([data-local])");
    for (var i = 0; i < times.length; i++) {
      var element = times[i];
      var date = new Date(element.getAttribute("datetime"));
      if (isNaN(date.getTime())) { continue; }
      element.textContent = localText(date, element.getAttribute("data-style"));
      element.setAttribute("data-local", "");
    }
    var notes = document.querySelectorAll("[data-times-note]");
    var zone = zoneName();
    for (var j = 0; j < notes.length; j++) {
      notes[j].textContent = "Times in your time zone" + (zone ? " (" + zone + ")" : "") +
        "; hover a time for UTC.";
    }
  }
  document.addEventListener("DOMContentLoaded", function () { rewrite(document); });
  // htmx swaps in rows and sections after the page has loaded.
  document.addEventListener("htmx:load", function (event) { rewrite(event.target); });
})();
