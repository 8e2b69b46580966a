// Tiny hand-written SVG bar charts (grouped or stacked) with a legend; labels are text nodes.
const NS = "http://www.w3.org/2000/svg";
export const COLORS = { answered: "#1a7f37", missed: "#cf222e", abandoned: "#bf8700", busy: "#8250df",
  sent: "#1f6feb", delivered: "#1a7f37", failed: "#cf222e", opened: "#8250df", clicked: "#bf8700",
  bounced: "#9a6700", replied: "#0a7ea4", unsubscribed: "#6e7781", suppressed: "#8c959f",
  wait: "#bf8700", talk: "#1f6feb", total: "#57606a" };

function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= value) return m * p;
  return 10 * p;
}

// barChart(container, {labels: [...], series: [{name, values, color}], stacked, height, unit, title})
export function barChart(container, opts) {
  const { labels, series } = opts;
  const stacked = Boolean(opts.stacked);
  const height = opts.height || 220;
  const left = 44, bottom = 34, top = 10, right = 8;
  // Groups get wider when there are few of them, so one run still reads as a chart.
  const groupWidth = Math.max(18, Math.min(Math.max(70, 22 * series.length), 640 / Math.max(1, labels.length)));
  const width = left + right + groupWidth * labels.length;
  const totals = labels.map((_, i) => stacked
    ? series.reduce((s, ser) => s + (Number(ser.values[i]) || 0), 0)
    : Math.max(0, ...series.map((ser) => Number(ser.values[i]) || 0)));
  const max = niceMax(Math.max(0, ...totals));
  const plotH = height - top - bottom;
  const y = (v) => top + plotH - (v / max) * plotH;

  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": opts.title || "chart" });
  if (opts.title) root.append(svg("title", {}, opts.title));
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    root.append(svg("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: "#eef0f3" }));
    const label = Number.isInteger(v) ? String(v) : v.toFixed(1);
    root.append(svg("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end" }, label + (opts.unit || "")));
  }
  root.append(svg("line", { class: "axis", x1: left, x2: width - right, y1: y(0), y2: y(0) }));
  const every = Math.ceil(labels.length / 24);
  labels.forEach((label, i) => {
    const gx = left + i * groupWidth;
    const inner = groupWidth * 0.8;
    let stackBase = 0;
    series.forEach((ser, s) => {
      const v = Number(ser.values[i]) || 0;
      let x, w, y0, y1;
      if (stacked) {
        x = gx + groupWidth * 0.1; w = inner; y0 = y(stackBase); y1 = y(stackBase + v); stackBase += v;
      } else {
        w = inner / series.length; x = gx + groupWidth * 0.1 + s * w; y0 = y(0); y1 = y(v);
      }
      if (v > 0) {
        const rect = svg("rect", { x, y: y1, width: Math.max(1, w - 1), height: Math.max(0, y0 - y1), fill: ser.color || COLORS[ser.name] || "#1f6feb" });
        rect.append(svg("title", {}, `${label} · ${ser.name}: ${v}${opts.unit || ""}`));
        root.append(rect);
      }
    });
    if (i % every === 0) {
      root.append(svg("text", { x: gx + groupWidth / 2, y: height - bottom + 14, "text-anchor": "middle" }, String(label).slice(0, 12)));
    }
  });
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const ser of series) {
    const item = document.createElement("span");
    item.style.setProperty("--c", ser.color || COLORS[ser.name] || "#1f6feb");
    item.textContent = ser.label || ser.name;
    legend.append(item);
  }
  container.replaceChildren(root, legend);
}
