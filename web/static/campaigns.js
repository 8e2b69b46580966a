// Campaign list with live progress bars, and the form for a new draft.
import { api, el, clear, query, toast, showError, localTime } from "./api.js";
import { on } from "./ws.js";
import { progressOf } from "./progress.js";

const form = document.getElementById("campaign-form");
const errBox = form.querySelector(".error");
const tbody = document.querySelector("#campaigns tbody");
const more = document.getElementById("more");
const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
let templates = [];
let cursor = null;
const bars = new Map(); // campaign id -> {bar, label}

function scheduleText(c) {
  const s = c.schedule;
  if (!s || !s.active) return "";
  if (s.kind === "cron") return `${s.cron} (${s.timezone})` + (s.next_fire_at ? " · next " + localTime(s.next_fire_at) : "");
  return s.run_at ? localTime(s.run_at) : "";
}

function row(c) {
  const bar = el("progress", { max: 100, value: 0 });
  const label = el("span", { class: "muted small nowrap" }, "");
  bars.set(c.id, { bar, label });
  return el("tr", { dataset: { id: String(c.id) } },
    el("td", {}, el("a", { href: `/marketing/campaigns/${c.id}` }, c.name)),
    el("td", {}, c.channel),
    el("td", {}, el("span", { class: "badge " + c.status }, c.status)),
    el("td", { class: "small" }, scheduleText(c)),
    el("td", {}, el("div", { class: "progress-line" }, bar, label)));
}

function showProgress(ev) {
  const b = bars.get(ev.campaign_id);
  if (!b) return;
  const p = progressOf(ev);
  b.bar.value = p.percent;
  b.label.textContent = p.total ? `${p.done}/${p.total}` : (ev.materialised ? "nobody matched" : "preparing…");
}

async function loadProgress(c) {
  try {
    const p = await api("GET", `/api/v1/campaigns/${c.id}/progress`);
    if (p.runs.length) showProgress(p.runs[0]);
  } catch (err) { /* the row stays without a bar */ }
}

async function load(append) {
  const page = await api("GET", "/api/v1/campaigns" + query({ limit: 50, cursor: append ? cursor : "" }));
  if (!append) { clear(tbody); bars.clear(); }
  for (const c of page.items) { tbody.append(row(c)); if (c.status !== "draft") loadProgress(c); }
  if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No campaigns yet.")));
  cursor = page.next;
  more.hidden = !cursor;
}

on("campaign.progress", showProgress);
more.addEventListener("click", () => load(true));

// ---- new campaign ----
function fillTemplates() {
  const sel = form.elements.template_id;
  clear(sel);
  for (const t of templates.filter((t) => t.channel === form.elements.channel.value)) sel.append(el("option", { value: t.id }, t.name));
  form.querySelector("[data-channel=email]").hidden = form.elements.channel.value !== "email";
}

async function audience() {
  const id = form.elements.segment_id.value;
  const out = document.getElementById("audience");
  try {
    const r = id ? await api("GET", `/api/v1/segments/${id}/count?timezone=${encodeURIComponent(tz)}`)
      : await api("POST", "/api/v1/segments/count", { filter: {}, timezone: tz });
    out.textContent = `${r.count.toLocaleString()} customers match now`;
  } catch (err) { out.textContent = ""; }
}

document.getElementById("show-new").addEventListener("click", async () => {
  form.hidden = !form.hidden;
  if (form.hidden) return;
  form.elements.timezone.value = form.elements.timezone.value || tz;
  const [t, s] = await Promise.all([api("GET", "/api/v1/templates"), api("GET", "/api/v1/segments")]);
  templates = t.items;
  fillTemplates();
  const seg = form.elements.segment_id;
  clear(seg).append(el("option", { value: "" }, "every customer"));
  for (const x of s.items) seg.append(el("option", { value: x.id }, x.name));
  audience();
  form.elements.name.focus();
});
form.elements.channel.addEventListener("change", fillTemplates);
form.elements.segment_id.addEventListener("change", audience);

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = form.elements;
  const body = { name: f.name.value.trim(), channel: f.channel.value, template_id: Number(f.template_id.value),
    segment_id: f.segment_id.value ? Number(f.segment_id.value) : null, timezone: f.timezone.value.trim() || "UTC" };
  if (f.channel.value === "email" && f.from_address.value.trim()) body.from_address = f.from_address.value.trim();
  try {
    const created = await api("POST", "/api/v1/campaigns", body);
    toast("Draft created.");
    location.href = `/marketing/campaigns/${created.id}`;
  } catch (err) { showError(errBox, err); }
});

load(false).catch((err) => toast(err.message, true));
