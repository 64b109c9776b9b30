// Charts: any <div class="chart" data-series='{"x":[...],"series":{"loss":[...]}}'> is drawn
// with uPlot, on page load and after htmx swaps in a fresh fragment (live runs).
(function () {
  var palette = ["#0b3d91", "#a00000", "#0a5c0a", "#6b4e00", "#6a1b9a"];
  function draw(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") return;
    var spec = JSON.parse(el.dataset.series || "{}");
    var names = Object.keys(spec.series || {});
    if (!spec.x || !spec.x.length || !names.length) { el.textContent = "No points yet."; return; }
    el.dataset.drawn = "1";
    var width = Math.max(260, Math.min(el.clientWidth || 600, 900));
    var series = [{ label: spec.xlabel || "step" }].concat(names.map(function (n, i) {
      return { label: n, stroke: palette[i % palette.length], width: 2 };
    }));
    new uPlot({ width: width, height: 220, series: series, scales: { x: { time: !!spec.time } } },
      [spec.x].concat(names.map(function (n) { return spec.series[n]; })), el);
  }
  function drawAll(root) { (root || document).querySelectorAll(".chart").forEach(draw); }
  document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  document.addEventListener("htmx:afterSwap", function (e) { drawAll(e.target); });
})();
