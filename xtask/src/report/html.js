// The case table's filters: words in the row's text and a status. One pass over the rows per
// change (typing waits for a pause), and each row's text is read once, at the first filter.
(function () {
  "use strict";
  var table = document.getElementById("cases");
  if (table) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var text = null;
    var q = document.getElementById("filter-text");
    var status = document.getElementById("filter-status");
    var shown = document.getElementById("shown");
    var timer;
    var apply = function () {
      if (!text) {
        text = rows.map(function (r) { return r.textContent.toLowerCase(); });
      }
      var words = q.value.toLowerCase().trim().split(/\s+/).filter(Boolean);
      var s = status.value;
      var n = 0;
      for (var i = 0; i < rows.length; i++) {
        var r = rows[i];
        var ok = s === "" || r.getAttribute("data-status") === s ||
          (s === "failures" && r.hasAttribute("data-failure"));
        for (var w = 0; ok && w < words.length; w++) {
          ok = text[i].indexOf(words[w]) >= 0;
        }
        if (r.hidden === ok) { r.hidden = !ok; }
        if (ok) { n++; }
      }
      shown.textContent = String(n);
    };
    q.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(apply, 150); });
    status.addEventListener("change", apply);
    // report.html?q=WORDS&status=STATUS opens filtered: a link can point at a selection.
    var given = new URLSearchParams(location.search);
    if (given.has("q") || given.has("status")) {
      q.value = given.get("q") || "";
      status.value = given.get("status") || "";
      apply();
    }
  }
  var only = document.getElementById("only-differing");
  if (only) {
    var matrix = document.getElementById("matrix");
    only.addEventListener("change", function () {
      matrix.classList.toggle("only-differing", only.checked);
    });
  }
})();
