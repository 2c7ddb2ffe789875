// godel dashboard: SVG charts (line and grouped bars) drawn as strings.
// Each chart is an <svg role="img"> with a <title> and a <desc> summary,
// and a hidden data table for screen readers.
"use strict";
(function (G) {
  const PALETTE = ["#0b5cad", "#c75b00", "#2a8a52", "#7b3fa0", "#b3261e", "#00707a"];
  G.PALETTE = PALETTE;
  let uid = 0;
  const W = 520, PAD_L = 70, PAD_R = 14, PAD_T = 12, PAD_B = 30;

  // A legend colour square (an SVG: the CSP allows no inline styles).
  const swatch = (c) => '<svg class="sw" width="12" height="12" aria-hidden="true"><rect width="12" height="12" rx="2" fill="' + c + '"/></svg>';

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function frame(id, title, desc, h, body, legend, table) {
    return '<figure class="chart">' +
      '<svg viewBox="0 0 ' + W + " " + h + '" role="img" aria-labelledby="' + id + "t " + id + 'd">' +
      '<title id="' + id + 't">' + G.esc(title) + "</title>" +
      '<desc id="' + id + 'd">' + G.esc(desc) + "</desc>" + body + "</svg>" +
      (legend ? '<div class="legend" aria-hidden="true">' + legend + "</div>" : "") +
      '<table class="vh"><caption>' + G.esc(title) + "</caption>" + table + "</table></figure>";
  }

  function yAxis(max, h, fmt) {
    let s = "";
    const ih = h - PAD_T - PAD_B;
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, y = PAD_T + ih - (ih * i) / 4;
      s += '<line class="grid" x1="' + PAD_L + '" x2="' + (W - PAD_R) + '" y1="' + y + '" y2="' + y + '"/>';
      s += '<text x="' + (PAD_L - 6) + '" y="' + (y + 4) + '" text-anchor="end">' + G.esc(fmt(v)) + "</text>";
    }
    s += '<line class="axis" x1="' + PAD_L + '" x2="' + PAD_L + '" y1="' + PAD_T + '" y2="' + (PAD_T + ih) + '"/>';
    s += '<line class="axis" x1="' + PAD_L + '" x2="' + (W - PAD_R) + '" y1="' + (PAD_T + ih) + '" y2="' + (PAD_T + ih) + '"/>';
    return s;
  }

  function hLines(lines, max, h) {
    const ih = h - PAD_T - PAD_B;
    return (lines || []).map((l) => {
      const y = PAD_T + ih - (ih * l.y) / max;
      return '<line x1="' + PAD_L + '" x2="' + (W - PAD_R) + '" y1="' + y + '" y2="' + y +
        '" stroke="' + (l.color || "#b3261e") + '" stroke-width="1.5" stroke-dasharray="' + (l.dash || "6 4") + '"/>' +
        '<text class="lbl" x="' + (W - PAD_R - 4) + '" y="' + (y - 4) + '" text-anchor="end">' + G.esc(l.label) + "</text>";
    }).join("");
  }

  // opts: {title, series:[{name, points:[[x, y]]}], xFmt, yFmt, hLines:[{y,label,color}], height, yMax}
  G.lineChart = function (o) {
    const id = "c" + ++uid, h = o.height || 200, yFmt = o.yFmt || ((v) => String(v)), xFmt = o.xFmt || G.clock;
    const pts = o.series.flatMap((s) => s.points);
    if (!pts.length) return '<p class="empty">' + G.esc(o.empty || "No data yet.") + "</p>";
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const max = niceMax(Math.max(o.yMax || 0, ...pts.map((p) => p[1]), ...(o.hLines || []).map((l) => l.y * 1.1)));
    const ih = h - PAD_T - PAD_B, iw = W - PAD_L - PAD_R;
    const X = (x) => PAD_L + (iw * (x - x0)) / (x1 - x0), Y = (y) => PAD_T + ih - (ih * y) / max;
    let body = yAxis(max, h, yFmt) + hLines(o.hLines, max, h);
    body += '<text x="' + PAD_L + '" y="' + (h - 8) + '">' + G.esc(xFmt(x0)) + "</text>";
    body += '<text x="' + (W - PAD_R) + '" y="' + (h - 8) + '" text-anchor="end">' + G.esc(xFmt(x1)) + "</text>";
    o.series.forEach((s, i) => {
      const c = s.color || PALETTE[i % PALETTE.length];
      const d = s.points.map((p, j) => (j ? "L" : "M") + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1)).join(" ");
      body += '<path d="' + d + '" fill="none" stroke="' + c + '" stroke-width="2"/>';
      if (s.points.length <= 40) {
        body += s.points.map((p) => '<circle cx="' + X(p[0]).toFixed(1) + '" cy="' + Y(p[1]).toFixed(1) + '" r="2.5" fill="' + c + '"/>').join("");
      }
    });
    const legend = o.series.map((s, i) => '<span>' + swatch(s.color || PALETTE[i % PALETTE.length]) + G.esc(s.name) + "</span>").join("") +
      (o.hLines || []).map((l) => '<span>' + swatch(l.color || "#b3261e") + G.esc(l.label) + "</span>").join("");
    const last = o.series.map((s) => s.name + " " + (s.points.length ? yFmt(s.points[s.points.length - 1][1]) : "none")).join(", ");
    const table = "<tr><th>time</th>" + o.series.map((s) => "<th>" + G.esc(s.name) + "</th>").join("") + "</tr>" +
      o.series[0].points.slice(-50).map((p, j, arr) => "<tr><td>" + G.esc(xFmt(p[0])) + "</td>" + o.series.map((s) => {
        const q = s.points[s.points.length - arr.length + j];
        return "<td>" + G.esc(q ? yFmt(q[1]) : "") + "</td>";
      }).join("") + "</tr>").join("");
    return frame(id, o.title, "Latest: " + last + ".", h, body, legend, table);
  };

  // opts: {title, labels:[...], series:[{name, values:[...]}], yFmt, hLines, height}
  G.barChart = function (o) {
    const id = "c" + ++uid, h = o.height || 220, yFmt = o.yFmt || ((v) => String(v));
    if (!o.labels.length) return '<p class="empty">' + G.esc(o.empty || "No data yet.") + "</p>";
    const vals = o.series.flatMap((s) => s.values);
    const max = niceMax(Math.max(...vals, ...(o.hLines || []).map((l) => l.y * 1.1)));
    const ih = h - PAD_T - PAD_B, iw = W - PAD_L - PAD_R;
    const slot = iw / o.labels.length, bw = Math.max(2, (slot * 0.8) / o.series.length);
    let body = yAxis(max, h, yFmt);
    const every = Math.ceil(o.labels.length / 12);
    o.labels.forEach((lab, i) => {
      o.series.forEach((s, k) => {
        const v = s.values[i] || 0, bh = (ih * v) / max;
        const x = PAD_L + slot * i + slot * 0.1 + bw * k;
        body += '<rect x="' + x.toFixed(1) + '" y="' + (PAD_T + ih - bh).toFixed(1) + '" width="' + (bw - 1).toFixed(1) +
          '" height="' + bh.toFixed(1) + '" fill="' + (s.color || PALETTE[k % PALETTE.length]) + '"><title>' +
          G.esc(lab + " " + s.name + ": " + yFmt(v)) + "</title></rect>";
      });
      if (i % every === 0) {
        body += '<text x="' + (PAD_L + slot * i + slot / 2).toFixed(1) + '" y="' + (h - 12) + '" text-anchor="middle">' +
          G.esc(String(lab).length > 14 ? String(lab).slice(0, 13) + "…" : lab) + "</text>";
      }
    });
    body += hLines(o.hLines, max, h);
    const legend = o.series.length > 1 ? o.series.map((s, i) => '<span>' + swatch(s.color || PALETTE[i % PALETTE.length]) + G.esc(s.name) + "</span>").join("") : "";
    const table = "<tr><th>label</th>" + o.series.map((s) => "<th>" + G.esc(s.name) + "</th>").join("") + "</tr>" +
      o.labels.map((l, i) => "<tr><td>" + G.esc(l) + "</td>" + o.series.map((s) => "<td>" + G.esc(yFmt(s.values[i] || 0)) + "</td>").join("") + "</tr>").join("");
    return frame(id, o.title, o.labels.length + " bars; largest " + yFmt(Math.max(...vals)) + ".", h, body, legend, table);
  };

  // A quota bar with its numbers in text.
  G.meter = function (label, used, limit, fmt) {
    fmt = fmt || ((v) => G.num(v, 0));
    if (limit === undefined || limit === null) {
      return '<span>' + G.esc(fmt(used)) + ' <span class="muted">(no limit)</span></span>';
    }
    const f = limit > 0 ? used / limit : 0, color = f >= 1 ? "#b3261e" : f >= 0.8 ? "#8a5300" : "#0b5cad";
    return '<div class="meter" role="meter" aria-label="' + G.esc(label) + '" aria-valuemin="0" aria-valuemax="' +
      limit + '" aria-valuenow="' + used + '" aria-valuetext="' + G.esc(fmt(used) + " of " + fmt(limit)) + '">' +
      '<svg viewBox="0 0 100 12" preserveAspectRatio="none" aria-hidden="true"><rect width="100" height="12" fill="#e3e6ea"/>' +
      '<rect width="' + Math.min(100, 100 * f).toFixed(1) + '" height="12" fill="' + color + '"/></svg></div>' +
      '<span class="muted">' + G.esc(fmt(used) + " / " + fmt(limit)) + "</span>";
  };
})(window.G);
