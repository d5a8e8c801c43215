// memchart.js: the workload page's memory charts, drawn as SVG from chart.json.
//
// Part of oomtuner's dashboard (Apache-2.0). No dependencies, no inline script, no innerHTML: every
// tenant string (pod names, reasons) goes into the DOM as text, so the page's Content-Security-Policy
// can allow scripts from this origin only. One chart per container: the working set (the highest of
// the workload's pods, from Prometheus), the memory limit and request as steps, and one marker per
// kill in the ledger, coloured by what killed it and hollow when it was stale.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var HEIGHT = 260;
  var MARGIN = { top: 12, right: 16, bottom: 28, left: 64 };
  var UNITS = [["Gi", 1073741824], ["Mi", 1048576], ["Ki", 1024]];

  function node(name, attrs, parent) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (key) { el.setAttribute(key, String(attrs[key])); });
    if (parent) { parent.appendChild(el); }
    return el;
  }

  function text(parent, x, y, content, cls) {
    var el = node("text", { x: x, y: y, "class": cls || "" }, parent);
    el.textContent = content;
    return el;
  }

  function bytes(n) {
    if (n === null || n === undefined) { return "—"; }
    for (var i = 0; i < UNITS.length; i++) {
      if (n >= UNITS[i][1]) {
        var v = n / UNITS[i][1];
        return (v >= 100 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)) + UNITS[i][0];
      }
    }
    return Math.round(n) + "B";
  }

  function when(t, span) {
    var iso = new Date(t * 1000).toISOString();
    return span > 2 * 86400 ? iso.slice(5, 10) + " " + iso.slice(11, 16) : iso.slice(11, 16);
  }

  // Ticks at multiples of a power of two of MiB (memory reads best in 64Mi, 256Mi, 1Gi steps).
  function memoryTicks(max) {
    var step = 1048576;
    while (max / step > 5) { step *= 2; }
    var ticks = [];
    for (var v = 0; v <= max; v += step) { ticks.push(v); }
    return ticks;
  }

  function path(points, x, y) {
    return points.map(function (p, i) { return (i ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join("");
  }

  // The working set with a gap where samples are missing (the workload ran no pod, or no scrape).
  function gapped(points, span) {
    var parts = [], current = [], gap = Math.max(span / 100, 180);
    points.forEach(function (p) {
      if (current.length && p[0] - current[current.length - 1][0] > gap) { parts.push(current); current = []; }
      current.push(p);
    });
    if (current.length) { parts.push(current); }
    return parts;
  }

  function highest(series, kills) {
    var max = 0;
    series.forEach(function (points) { points.forEach(function (p) { max = Math.max(max, p[1]); }); });
    kills.forEach(function (k) { if (k.limit) { max = Math.max(max, k.limit); } });
    return max > 0 ? max * 1.12 : 268435456;
  }

  function axes(svg, x, y, start, end, max, width) {
    var grid = node("g", { "class": "axis" }, svg);
    memoryTicks(max).forEach(function (v) {
      node("line", { x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v), "class": "grid-line" }, grid);
      text(grid, MARGIN.left - 6, y(v) + 4, bytes(v), "y-label");
    });
    for (var i = 0; i <= 5; i++) {
      var t = start + (end - start) * i / 5;
      var label = text(grid, x(t), HEIGHT - 8, when(t, end - start) + (i === 5 ? " UTC" : ""), "x-label");
      if (i === 0) { label.setAttribute("class", "x-label first"); }
      if (i === 5) { label.setAttribute("class", "x-label last"); }
    }
  }

  function markers(svg, kills, x, y, max) {
    var group = node("g", { "class": "kills" }, svg);
    kills.forEach(function (k) {
      var cy = y(k.limit || max / 1.12);
      node("line", { x1: x(k.t), x2: x(k.t), y1: y(0), y2: cy, "class": "kill-rule kill-" + k.kind }, group);
      var dot = node("circle", {
        cx: x(k.t), cy: cy, r: 6, "class": "kill kill-" + k.kind + (k.stale ? " stale" : ""),
        "data-kill-id": k.id, "data-kind": k.kind, "data-limit": k.limit === null ? "" : k.limit, tabindex: 0
      }, group);
      var title = node("title", {}, dot);
      title.textContent = new Date(k.t * 1000).toISOString().replace(".000Z", "Z") + " " +
        (k.kind === "child" ? "child process" : k.classification) + " kill of " + k.pod +
        (k.limit ? " at a " + bytes(k.limit) + " limit" : "") + (k.stale ? " (stale)" : "") + ": " + k.reason;
    });
  }

  function draw(target, c, start, end) {
    var width = Math.max(target.clientWidth || 0, 480);
    var series = [c.workingSet, c.limit, c.request];
    var max = highest(series, c.kills);
    var x = function (t) { return MARGIN.left + (t - start) / (end - start) * (width - MARGIN.left - MARGIN.right); };
    var y = function (v) { return HEIGHT - MARGIN.bottom - v / max * (HEIGHT - MARGIN.top - MARGIN.bottom); };
    var svg = node("svg", {
      width: width, height: HEIGHT, viewBox: "0 0 " + width + " " + HEIGHT, "class": "memchart",
      "data-working-set-points": c.workingSet.length, "data-kills": c.kills.length,
      "data-limit-now": c.limit.length ? c.limit[c.limit.length - 1][1] : "",
      "data-request-now": c.request.length ? c.request[c.request.length - 1][1] : ""
    });
    axes(svg, x, y, start, end, max, width);
    gapped(c.workingSet, end - start).forEach(function (part) {
      node("path", { d: path(part, x, y), "class": "line ws" }, svg);
    });
    if (c.request.length) { node("path", { d: path(c.request, x, y), "class": "line request" }, svg); }
    if (c.limit.length) { node("path", { d: path(c.limit, x, y), "class": "line limit" }, svg); }
    markers(svg, c.kills, x, y, max);
    target.replaceChildren(svg);
  }

  function load() {
    var note = document.getElementById("usage-note");
    if (!note) { return; }
    fetch(note.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("chart data: HTTP " + r.status); } return r.json(); })
      .then(function (data) {
        note.textContent = data.usage.message;
        note.classList.toggle("warn", !data.usage.ok);
        data.containers.forEach(function (c) {
          var target = document.querySelector('.chart[data-container="' + CSS.escape(c.name) + '"]');
          if (target) { draw(target, c, data.start, data.end); }
        });
        document.body.setAttribute("data-charts", "drawn");
      })
      .catch(function (err) {
        note.textContent = "The chart could not be drawn: " + err.message;
        note.classList.add("warn");
        document.body.setAttribute("data-charts", "failed");
      });
  }

  document.addEventListener("DOMContentLoaded", load);
})();
