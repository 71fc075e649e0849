// jobsupervisor dashboard: live refresh of the page's [data-live] regions, confirmations and
// "select all". No dependencies, nothing fetched from anywhere but this dashboard.
(function () {
  "use strict";

  var INTERVAL = 5000;
  var regions = document.querySelectorAll("[data-live]");
  var toggle = document.getElementById("live-toggle");
  var label = document.getElementById("live-status");
  var paused = false;
  var timer = null;

  function interacting() {
    // Never replace a region the user is working in: checked boxes, a focused field.
    for (var i = 0; i < regions.length; i++) {
      var region = regions[i];
      if (region.querySelector("input[type=checkbox]:checked")) return true;
      var active = document.activeElement;
      if (active && active !== document.body && region.contains(active) &&
          /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName)) return true;
    }
    return false;
  }

  function show(text, failed) {
    if (!label) return;
    label.textContent = text;
    toggle.classList.toggle("error", !!failed);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, INTERVAL);
  }

  function refresh() {
    if (paused || document.hidden || interacting()) { schedule(); return; }
    fetch(window.location.href, {
      headers: { "X-Live": "1", "Accept": "application/json" },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (data) {
      if (interacting()) return;
      Object.keys(data.regions || {}).forEach(function (name) {
        var target = document.querySelector('[data-live="' + name + '"]');
        // The server renders these fragments with the same escaping templates as the page.
        if (target) target.innerHTML = data.regions[name];
      });
      show("live", false);
    }).catch(function () {
      show("offline", true);
    }).then(schedule);
  }

  if (toggle && regions.length) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      show(paused ? "paused" : "live", false);
      if (!paused) refresh();
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && !paused) refresh();
    });
    schedule();
  }

  // Confirmation for destructive actions: on the submitting button, else on the form.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var message = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // "Select all" in a job list (the list may be re-rendered, so listen on the document).
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-select-all]")) return;
    var table = box.closest("table");
    table.querySelectorAll('input[name="ids"]').forEach(function (item) { item.checked = box.checked; });
  });
})();
