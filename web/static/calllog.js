// Call log: filters (dates read in the browser's time zone), keyset paging, CSV export link
// that follows the filters, and a recording player where a recording exists.
import { api, el, clear, debounce, query, localTime, duration, showError } from "./api.js";

const form = document.getElementById("filters");
const tbody = document.querySelector("#calls tbody");
const next = document.getElementById("next-page");
const prev = document.getElementById("prev-page");
const info = document.getElementById("page-info");
const csv = document.getElementById("csv");
const errBox = document.getElementById("list-error");
const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
const PAGE = 25;
for (const b of form.querySelectorAll(".nojs")) b.hidden = true;

let cursors = [""];
let nextCursor = null;
let seq = 0;

function filters() {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = String(v).trim();
  return out;
}

function player(call) {
  if (!call.recording) return "";
  const btn = el("button", { type: "button", class: "small quiet", title: "Play the recording" }, "▶ Play");
  btn.addEventListener("click", () => {
    const audio = el("audio", { controls: true, src: `/api/v1/calls/${call.id}/recording` });
    btn.replaceWith(audio);
    audio.play().catch(() => {});
  });
  return btn;
}

function row(c) {
  return el("tr", { dataset: { id: String(c.id) } },
    el("td", { class: "nowrap" }, el("time", { datetime: c.started_at }, localTime(c.started_at))),
    el("td", {}, c.direction),
    el("td", { class: "nowrap" }, c.caller || "withheld", c.caller_name ? el("span", { class: "muted small" }, " " + c.caller_name) : ""),
    el("td", { class: "nowrap" }, c.callee || ""),
    el("td", {}, c.customer_id ? el("a", { href: `/customers/${c.customer_id}` }, c.customer_name || "#" + c.customer_id) : ""),
    el("td", {}, c.agent || ""),
    el("td", { class: "hide-narrow" }, c.queue || ""),
    el("td", { class: "num" }, duration(c.wait_seconds)),
    el("td", { class: "num" }, duration(c.talk_seconds)),
    el("td", {}, el("span", { class: "badge " + c.disposition }, c.disposition)),
    el("td", {}, player(c)));
}

async function load() {
  const mine = ++seq;
  const f = filters();
  const params = { ...f, tz };
  csv.href = "/api/v1/calls.csv" + query(params);
  try {
    const page = await api("GET", "/api/v1/calls" + query({ ...params, limit: PAGE, cursor: cursors[cursors.length - 1] }));
    if (mine !== seq) return;
    errBox.hidden = true;
    clear(tbody);
    for (const c of page.items) tbody.append(row(c));
    if (!page.items.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 11, class: "muted" }, "No call matches.")));
    nextCursor = page.next;
    next.hidden = !nextCursor;
    prev.hidden = cursors.length < 2;
    info.textContent = `page ${cursors.length}`;
    history.replaceState(null, "", "/supervisor/calls" + query(f));
  } catch (err) {
    if (mine === seq) showError(errBox, err);
  }
}

const reload = () => { cursors = [""]; load(); };
for (const input of form.querySelectorAll("input[type=date], select")) input.addEventListener("change", reload);
form.elements.queue.addEventListener("input", debounce(reload, 300));
form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(); });
document.getElementById("clear-filters").addEventListener("click", () => {
  form.reset();
  for (const input of form.querySelectorAll("input")) input.value = "";
  for (const select of form.querySelectorAll("select")) select.value = "";
  reload();
});
next.addEventListener("click", (ev) => { ev.preventDefault(); if (nextCursor) { cursors.push(nextCursor); load(); } });
prev.addEventListener("click", () => { if (cursors.length > 1) cursors.pop(); load(); });

// Customer filter: type a name or number, pick from the list.
const find = document.getElementById("customer-find");
const results = document.getElementById("customer-results");
find.addEventListener("input", debounce(async () => {
  const q = find.value.trim();
  clear(results);
  if (!q) { if (form.elements.customer_id.value) { form.elements.customer_id.value = ""; reload(); } return; }
  if (q.length < 2) return;
  const page = await api("GET", "/api/v1/customers" + query({ q, limit: 8 }));
  for (const c of page.items) {
    results.append(el("li", {}, el("button", { type: "button", onclick: () => {
      form.elements.customer_id.value = c.id;
      find.value = c.name;
      clear(results);
      reload();
    } }, el("strong", {}, c.name), c.company ? " · " + c.company : "")));
  }
}, 200));

// Re-read the first page in the browser's zone (the server rendered it in UTC).
reload();
