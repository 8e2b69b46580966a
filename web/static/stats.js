// Figures per agent and per hour: tiles, SVG charts and tables; refreshed when calls end.
import { api, el, clear, query, duration, showError } from "./api.js";
import { barChart } from "./charts.js";
import { on } from "./ws.js";

const form = document.getElementById("filters");
const errBox = document.getElementById("stats-error");
const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function isoDay(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
function setRange(days) {
  const to = new Date();
  const from = new Date();
  from.setDate(to.getDate() - days);
  form.elements.from.value = isoDay(from);
  form.elements.to.value = isoDay(to);
}
if (!form.elements.from.value && !form.elements.to.value) setRange(6);

function table(tbody, items) {
  clear(tbody);
  for (const r of items) {
    tbody.append(el("tr", {}, el("td", {}, r.key), el("td", { class: "num" }, String(r.answered)),
      el("td", { class: "num" }, String(r.missed)), el("td", { class: "num" }, String(r.abandoned)),
      el("td", { class: "num" }, String(r.busy)),
      el("td", { class: "num" }, String(r.total)), el("td", { class: "num" }, duration(r.avg_wait)),
      el("td", { class: "num" }, duration(r.avg_talk))));
  }
  if (!items.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "muted" }, "No calls in this range.")));
}

function tile(n, label) {
  return el("div", { class: "tile" }, el("div", { class: "n" }, n), el("div", { class: "l" }, label));
}

async function load() {
  const params = { from: form.elements.from.value, to: form.elements.to.value, tz };
  try {
    const [agents, hours] = await Promise.all([
      api("GET", "/api/v1/calls/stats" + query({ ...params, group_by: "agent" })),
      api("GET", "/api/v1/calls/stats" + query({ ...params, group_by: "hour" })),
    ]);
    errBox.hidden = true;
    const a = agents.items;
    const h = hours.items;
    const sum = (k) => h.reduce((s, r) => s + r[k], 0);
    const total = sum("total");
    const waited = h.reduce((s, r) => s + r.avg_wait * r.total, 0);
    const answered = sum("answered");
    const talked = h.reduce((s, r) => s + r.avg_talk * r.answered, 0);
    document.getElementById("tiles").replaceChildren(
      tile(String(total), "calls"), tile(String(answered), "answered"), tile(String(sum("missed")), "missed"),
      tile(String(sum("abandoned")), "abandoned"), tile(String(sum("busy")), "busy"), tile(duration(total ? waited / total : 0), "average wait"),
      tile(duration(answered ? talked / answered : 0), "average talk"));
    const pick = (items, k) => items.map((r) => r[k]);
    barChart(document.getElementById("agent-chart"), { title: "Calls per agent", labels: pick(a, "key"),
      series: ["answered", "missed", "abandoned", "busy"].map((name) => ({ name, values: pick(a, name) })) });
    barChart(document.getElementById("hour-chart"), { title: "Calls per hour", stacked: true, labels: pick(h, "key"),
      series: ["answered", "missed", "abandoned", "busy"].map((name) => ({ name, values: pick(h, name) })) });
    barChart(document.getElementById("time-chart"), { title: "Average wait and talk (s)", unit: "s", labels: pick(a, "key"),
      series: [{ name: "wait", label: "avg wait", values: pick(a, "avg_wait") }, { name: "talk", label: "avg talk", values: pick(a, "avg_talk") }] });
    table(document.querySelector("#agent-table tbody"), a);
    table(document.querySelector("#hour-table tbody"), h.filter((r) => r.total));
    document.getElementById("range-label").textContent = `${params.from || "…"} – ${params.to || "…"} (${tz})`;
    history.replaceState(null, "", "/supervisor/stats" + query({ from: params.from, to: params.to }));
  } catch (err) { showError(errBox, err); }
}

for (const input of form.querySelectorAll("input")) input.addEventListener("change", load);
for (const b of form.querySelectorAll("[data-range]")) b.addEventListener("click", () => { setRange(Number(b.dataset.range)); load(); });
form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
let pending = 0;
on("calls.ended", () => { clearTimeout(pending); pending = setTimeout(load, 1000); });
load();
