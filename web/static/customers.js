// Customer list: search as you type, filters, sorting, keyset paging (Previous keeps a stack).
import { api, el, clear, debounce, query, localTime, showError } from "./api.js";

const form = document.getElementById("filters");
const tbody = document.querySelector("#customers tbody");
const next = document.getElementById("next-page");
const prev = document.getElementById("prev-page");
const first = document.getElementById("first-page");
const info = document.getElementById("page-info");
const errBox = document.getElementById("list-error");
const PAGE = 25;
for (const b of form.querySelectorAll(".nojs")) b.hidden = true;

let cursors = [""];   // cursor of each page seen so far; the last one is the current page
let nextCursor = null;
let seq = 0;

function filters() {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) out[k] = String(v).trim();
  return out;
}

function row(c) {
  return el("tr", { dataset: { id: String(c.id) } },
    el("td", {}, el("a", { href: `/customers/${c.id}` }, c.name)),
    el("td", {}, c.company || ""),
    el("td", { class: "nowrap" }, (c.phones[0] || {}).value || ""),
    el("td", { class: "hide-narrow" }, (c.emails[0] || {}).value || ""),
    el("td", {}, c.tags.map((t) => el("span", { class: "tag" }, t))),
    el("td", { class: "hide-narrow" }, el("time", { datetime: c.updated_at || "" }, localTime(c.updated_at))));
}

async function load() {
  const mine = ++seq;
  const f = filters();
  const cursor = cursors[cursors.length - 1];
  try {
    const page = await api("GET", "/api/v1/customers" + query({ ...f, limit: PAGE, cursor }));
    if (mine !== seq) return;  // a newer keystroke won
    errBox.hidden = true;
    clear(tbody);
    for (const c of page.items) tbody.append(row(c));
    if (!page.items.length) tbody.append(el("tr", { class: "empty" }, el("td", { colspan: 6, class: "muted" }, "No customer matches.")));
    nextCursor = page.next;
    next.hidden = !nextCursor;
    prev.hidden = cursors.length < 2;
    first.hidden = true;
    info.textContent = `page ${cursors.length}`;
    history.replaceState(null, "", "/customers" + query(f));
  } catch (err) {
    if (mine === seq) showError(errBox, err);
  }
}

const reload = () => { cursors = [""]; load(); };
document.getElementById("q").addEventListener("input", debounce(reload, 200));
for (const input of form.querySelectorAll("input:not(#q)")) input.addEventListener("input", debounce(reload, 400));
for (const select of form.querySelectorAll("select")) select.addEventListener("change", reload);
form.addEventListener("submit", (ev) => { ev.preventDefault(); reload(); });
next.addEventListener("click", (ev) => {
  ev.preventDefault();
  if (!nextCursor) return;
  cursors.push(nextCursor);
  load();
});
prev.addEventListener("click", () => {
  if (cursors.length > 1) cursors.pop();
  load();
});
// The server rendered page one (or a cursor page without JS); from here on the API drives paging.
if (new URLSearchParams(location.search).has("cursor")) reload();
else {
  nextCursor = next.hidden ? null : new URL(next.href, location.href).searchParams.get("cursor");
  info.textContent = "page 1";
}
