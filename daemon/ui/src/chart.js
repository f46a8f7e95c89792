// A small line chart as SVG: enough for a minute of figures, no chart library.

import { esc } from "./api.js";

export class Chart {
  constructor(parent, title, unit) {
    this.points = [];
    this.unit = unit;
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.innerHTML = `<figcaption>${esc(title)}: <output>–</output></figcaption>
      <svg viewBox="0 0 120 40" preserveAspectRatio="none" role="img" aria-label="${esc(title)} over the last two minutes"><polyline points=""/></svg>`;
    parent.append(fig);
    this.out = fig.querySelector("output");
    this.line = fig.querySelector("polyline");
  }

  push(value) {
    this.points.push(value);
    if (this.points.length > 60) this.points.shift();
    this.out.textContent = value === null ? "n/a" : this.unit(value);
    const vals = this.points.map((v) => v ?? 0);
    const max = Math.max(...vals, 1e-9);
    this.line.setAttribute("points", vals.map((v, i) => `${i * 2},${(40 - (v / max) * 38).toFixed(1)}`).join(" "));
  }
}

export const bytes = (v) => {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < u.length - 1) (v /= 1024), i++;
  return `${v.toFixed(i ? 1 : 0)} ${u[i]}`;
};
