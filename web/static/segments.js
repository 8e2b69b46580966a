// Segment editor: conditions built from the server's whitelist of fields and operators, a live
// count as you edit, and the raw JSON for nested rules.
import { api, el, clear, debounce, toast, showError } from "./api.js";

const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const TEXT = ["eq", "ne", "contains", "starts_with", "in", "not_in", "empty", "not_empty"];
const FIELDS = {
  name: TEXT, company: TEXT, source: TEXT, city: TEXT, region: TEXT,
  tag: ["has", "has_not", "has_any", "has_all", "has_none"],
  created_at: ["within_days", "older_than_days", "before", "after", "empty", "not_empty"],
  last_contacted_at: ["within_days", "older_than_days", "before", "after", "empty", "not_empty"],
  birthday: ["today", "month", "empty", "not_empty"],
  has_email: ["is"], has_phone: ["is"], has_mobile: ["is"],
  campaign: ["received", "not_received", "opened", "not_opened", "replied", "not_replied", "bounced", "unsubscribed"],
  custom: ["eq", "ne", "contains", "exists", "not_exists"],
};
const FIELD_LABELS = { name: "name", company: "company", source: "source", city: "city", region: "region",
  tag: "tag", created_at: "created", last_contacted_at: "last contact", birthday: "birthday",
  has_email: "has email", has_phone: "has phone", has_mobile: "has mobile", campaign: "campaign",
  custom: "custom field…" };
const OP_LABELS = { eq: "is", ne: "is not", contains: "contains", starts_with: "starts with", in: "is one of",
  not_in: "is none of", empty: "is empty", not_empty: "is not empty", has: "has", has_not: "has not",
  has_any: "has any of", has_all: "has all of", has_none: "has none of", within_days: "within last … days",
  older_than_days: "more than … days ago", before: "before", after: "after", today: "is today",
  month: "in month", is: "is", received: "received", not_received: "did not receive", opened: "opened",
  not_opened: "did not open", replied: "replied to", not_replied: "did not reply to", bounced: "bounced on",
  unsubscribed: "unsubscribed via", exists: "is set", not_exists: "is not set" };
const NO_VALUE = new Set(["empty", "not_empty", "today", "exists", "not_exists"]);
const LISTS = new Set(["in", "not_in", "has_any", "has_all", "has_none"]);
const NUMBERS = new Set(["within_days", "older_than_days", "month"]);

const form = document.getElementById("segment-form");
const box = document.getElementById("conditions");
const countEl = document.getElementById("live-count");
const errBox = form.querySelector(".error");
let current = null;   // the saved segment being edited
let campaigns = [];

function option(value, label, selected) {
  return el("option", { value, selected: value === selected }, label);
}

function valueInput(field, op, value) {
  if (NO_VALUE.has(op)) return el("span");
  if (op === "is") {
    return el("select", { class: "value" }, option("true", "yes", String(value ?? true)), option("false", "no", String(value ?? true)));
  }
  if (field === "campaign") {
    const s = el("select", { class: "value" });
    for (const c of campaigns) s.append(option(String(c.id), `${c.name} (#${c.id})`, String(value ?? "")));
    return s;
  }
  if (op === "before" || op === "after") return el("input", { class: "value", type: "date", value: (value || "").slice(0, 10) });
  if (NUMBERS.has(op)) return el("input", { class: "value", type: "number", min: op === "month" ? 1 : 0, max: op === "month" ? 12 : 36500, value: value ?? (op === "month" ? new Date().getMonth() + 1 : 30) });
  const text = Array.isArray(value) ? value.join(", ") : (value ?? "");
  return el("input", { class: "value", value: text, placeholder: LISTS.has(op) ? "a, b, c" : "" });
}

function conditionRow(cond) {
  let field = cond.field || "tag";
  let key = "";
  if (field.startsWith("custom.")) { key = field.slice(7); field = "custom"; }
  const fieldSel = el("select", { class: "field", "aria-label": "field" });
  for (const f of Object.keys(FIELDS)) fieldSel.append(option(f, FIELD_LABELS[f], field));
  const keyInput = el("input", { class: "custom-key", placeholder: "key", value: key, size: 8, hidden: field !== "custom" });
  const opSel = el("select", { class: "op", "aria-label": "operator" });
  const row = el("div", { class: "condition" }, el("div", { class: "key" }, fieldSel, keyInput), opSel, el("span"), el("button", { type: "button", class: "small quiet", title: "Remove", "aria-label": "remove condition" }, "✕"));
  function fillOps(selected) {
    clear(opSel);
    for (const op of FIELDS[fieldSel.value]) opSel.append(option(op, OP_LABELS[op] || op, selected));
  }
  function fillValue(value) { row.children[2].replaceWith(valueInput(fieldSel.value, opSel.value, value)); }
  fillOps(cond.op);
  fillValue(cond.value);
  fieldSel.addEventListener("change", () => { keyInput.hidden = fieldSel.value !== "custom"; fillOps(); fillValue(); changed(); });
  opSel.addEventListener("change", () => { fillValue(); changed(); });
  row.addEventListener("input", changed);
  row.addEventListener("change", changed);
  row.lastChild.addEventListener("click", () => { row.remove(); changed(); });
  return row;
}

function readCondition(row) {
  let field = row.querySelector(".field").value;
  if (field === "custom") field = "custom." + row.querySelector(".custom-key").value.trim();
  const op = row.querySelector(".op").value;
  const input = row.querySelector(".value");
  const cond = { field, op };
  if (!input) return cond;
  const raw = input.value.trim();
  if (op === "is") cond.value = raw === "true";
  else if (field === "campaign" || NUMBERS.has(op)) cond.value = Number(raw);
  else if (LISTS.has(op)) cond.value = raw.split(",").map((s) => s.trim()).filter(Boolean);
  else cond.value = raw;
  return cond;
}

function buildFilter() {
  const rows = [...box.querySelectorAll(".condition")].map(readCondition);
  if (!rows.length) return {};
  return { [form.elements.combine.value]: rows };
}

function loadFilter(filter) {
  clear(box);
  const key = filter && filter.any ? "any" : "all";
  const list = filter && (filter.all || filter.any);
  const flat = Array.isArray(list) && list.every((c) => c && c.field);
  form.elements.combine.value = key;
  if (filter && filter.field) box.append(conditionRow(filter));
  else if (flat) for (const c of list) box.append(conditionRow(c));
  form.elements.json.value = JSON.stringify(filter || {}, null, 2);
  // Nested filters stay as JSON; the builder shows what it can.
  box.dataset.nested = filter && Object.keys(filter).length && !flat && !filter.field ? "yes" : "no";
  count();
}

let countSeq = 0;
const count = debounce(async () => {
  const mine = ++countSeq;
  const filter = currentFilter();
  if (filter === null) { countEl.textContent = "?"; return; }
  try {
    const r = await api("POST", "/api/v1/segments/count", { filter, timezone: tz });
    if (mine === countSeq) { countEl.textContent = r.count.toLocaleString(); errBox.hidden = true; }
  } catch (err) {
    if (mine === countSeq) { countEl.textContent = "?"; showError(errBox, err); }
  }
}, 300);

function currentFilter() {
  if (box.dataset.nested === "yes") {
    try { return JSON.parse(form.elements.json.value || "{}"); } catch (err) { return null; }
  }
  return buildFilter();
}

function changed() {
  box.dataset.nested = "no";
  form.elements.json.value = JSON.stringify(buildFilter(), null, 2);
  count();
}

form.elements.json.addEventListener("input", debounce(() => {
  try {
    const parsed = JSON.parse(form.elements.json.value || "{}");
    const json = form.elements.json.value;
    loadFilter(parsed);
    form.elements.json.value = json;
  } catch (err) { countEl.textContent = "?"; }
}, 500));
form.elements.combine.addEventListener("change", changed);
document.getElementById("add-condition").addEventListener("click", () => {
  box.append(conditionRow({ field: "tag", op: "has", value: "" }));
  box.lastChild.querySelector(".value")?.focus();
  changed();
});

function edit(segment) {
  current = segment;
  errBox.hidden = true;
  document.getElementById("editor-title").textContent = segment ? segment.name : "New segment";
  form.elements.name.value = segment ? segment.name : "";
  form.elements.description.value = segment ? segment.description || "" : "";
  document.getElementById("delete-segment").hidden = !segment;
  loadFilter(segment ? segment.filter : {});
}

async function loadList() {
  const list = document.getElementById("segments");
  const page = await api("GET", "/api/v1/segments");
  clear(list);
  for (const s of page.items) {
    const countCell = el("span", { class: "muted small" }, "…");
    list.append(el("li", {}, el("button", { type: "button", class: "small quiet", onclick: () => edit(s) }, s.name), countCell));
    api("GET", `/api/v1/segments/${s.id}/count?timezone=${encodeURIComponent(tz)}`)
      .then((r) => { countCell.textContent = `${r.count.toLocaleString()} customers`; })
      .catch(() => { countCell.textContent = ""; });
  }
  if (!page.items.length) list.append(el("li", { class: "muted" }, "No segments yet."));
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const filter = currentFilter();
  if (filter === null) { showError(errBox, new Error("The JSON filter is not valid JSON.")); return; }
  const body = { name: form.elements.name.value.trim(), description: form.elements.description.value.trim(), filter };
  try {
    const saved = current
      ? await api("PATCH", `/api/v1/segments/${current.id}`, body)
      : await api("POST", "/api/v1/segments", body);
    toast("Segment saved.");
    edit(saved);
    await loadList();
  } catch (err) { showError(errBox, err); }
});
document.getElementById("new-segment").addEventListener("click", () => edit(null));
document.getElementById("delete-segment").addEventListener("click", async () => {
  if (!current || !confirm(`Delete segment ${current.name}?`)) return;
  try { await api("DELETE", `/api/v1/segments/${current.id}`); edit(null); await loadList(); }
  catch (err) { showError(errBox, err); }
});

api("GET", "/api/v1/campaigns?limit=200").then((p) => { campaigns = p.items; }).catch(() => {});
edit(null);
loadList().catch((err) => showError(errBox, err));
