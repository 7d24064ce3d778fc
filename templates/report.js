// Sorting and filtering of the stack table. No data is turned into code: rows carry their
// values in data-* attributes, read with dataset.
(function () {
  "use strict";
  var table = document.getElementById("stack-table");
  if (!table) { return; }
  // One tbody per stack: its row, then the row of its details.
  var stacks = function () { return Array.prototype.slice.call(table.tBodies); };
  var filter = document.getElementById("filter");
  var verdict = document.getElementById("verdict-filter");
  var shown = document.getElementById("shown");

  function value(stack, key, type) {
    var v = stack.rows[0].dataset[key] || "";
    return type === "num" ? parseFloat(v) || 0 : v.toLowerCase();
  }

  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);

  function sortBy(th, desc) {
    var key = th.dataset.key;
    headers.forEach(function (c) { c.classList.remove("asc", "desc"); });
    th.classList.add(desc ? "desc" : "asc");
    var rows = stacks();
    rows.sort(function (a, b) {
      var x = value(a, key, th.dataset.type), y = value(b, key, th.dataset.type);
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (c === 0) { c = value(a, "id", "num") - value(b, "id", "num"); }
      return desc ? -c : c;
    });
    rows.forEach(function (r) { table.appendChild(r); });
  }

  headers.forEach(function (th) {
    if (!th.dataset.key) { return; }
    th.addEventListener("click", function () { sortBy(th, !th.classList.contains("desc")); });
  });

  // A shareable view: report.html#sort=outstanding (descending) or #sort=rate-asc.
  var m = /^#sort=([a-z]+)(-asc)?$/.exec(window.location.hash);
  if (m) {
    headers.forEach(function (th) { if (th.dataset.key === m[1]) { sortBy(th, !m[2]); } });
  }

  function apply() {
    var text = (filter.value || "").toLowerCase();
    var v = verdict.value;
    var n = 0;
    var all = stacks();
    all.forEach(function (stack) {
      // The frames only (function, file, module): not the detector's reasons beside them.
      var frames = stack.querySelector("ol.frames");
      var ok = (!v || stack.rows[0].dataset.verdict === v) &&
               (!text || (frames ? frames.textContent : "").toLowerCase().indexOf(text) !== -1);
      stack.hidden = !ok;
      if (ok) { n += 1; }
    });
    shown.textContent = n + " of " + all.length + " stacks shown";
  }
  // A stack's details row shows while its summary is open: CSS :has() does it, and this class
  // does it in browsers without :has() (Firefox before 121).
  Array.prototype.forEach.call(table.querySelectorAll("tbody.stack details"), function (d) {
    d.addEventListener("toggle", function () {
      d.closest("tbody").classList.toggle("open", d.open);
    });
  });

  filter.addEventListener("input", apply);
  verdict.addEventListener("change", apply);
  apply();
})();
