// Merge two duplicates: pick both sides by search, swap, merge, land on the kept card.
import { api, el, clear, debounce, query, showError } from "./api.js";

const form = document.getElementById("merge-form");

function card(c) {
  return [
    el("h3", {}, el("a", { href: `/customers/${c.id}` }, c.name), " ", el("span", { class: "muted small" }, "#" + c.id)),
    el("div", { class: "muted" }, c.company || ""),
    el("ul", { class: "contacts" }, c.phones.map((p) => el("li", {}, "☎ " + p.value)), c.emails.map((e) => el("li", {}, "✉ " + e.value))),
    el("div", {}, c.tags.map((t) => el("span", { class: "tag" }, t))),
  ];
}

const shown = { keep: null, other: null };
function pick(side, c) {
  shown[side] = c;
  form.elements[side].value = c ? c.id : "";
  const box = document.querySelector(`[data-card="${side}"]`);
  box.replaceChildren(...(c ? card(c) : [el("p", { class: "muted" }, "Pick a customer.")]));
  clear(document.querySelector(`[data-results="${side}"]`));
}

for (const side of ["keep", "other"]) {
  const input = document.querySelector(`[data-find="${side}"]`);
  const results = document.querySelector(`[data-results="${side}"]`);
  input.addEventListener("input", debounce(async () => {
    const q = input.value.trim();
    if (q.length < 2) { clear(results); return; }
    const page = await api("GET", "/api/v1/customers" + query({ q, limit: 8 }));
    clear(results);
    for (const c of page.items) {
      results.append(el("li", {}, el("button", { type: "button", onclick: () => { pick(side, c); input.value = ""; } },
        el("strong", {}, c.name), c.company ? " · " + c.company : "", " ", el("span", { class: "muted small" }, "#" + c.id))));
    }
  }, 200));
}

document.getElementById("swap").addEventListener("click", async () => {
  const keep = form.elements.keep.value;
  const other = form.elements.other.value;
  const [a, b] = await Promise.all([other && api("GET", `/api/v1/customers/${other}`), keep && api("GET", `/api/v1/customers/${keep}`)]);
  pick("keep", a || null);
  pick("other", b || null);
});

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const errBox = form.querySelector(".error");
  errBox.hidden = true;
  const keep = Number(form.elements.keep.value);
  const other = Number(form.elements.other.value);
  if (!keep || !other) { showError(errBox, new Error("Pick both customers first.")); return; }
  const names = [shown.other, shown.keep].map((c) => (c ? c.name : ""));
  if (!confirm(`Fold ${names[0] || "#" + other} into ${names[1] || "#" + keep}? This cannot be undone.`)) return;
  try {
    await api("POST", `/api/v1/customers/${keep}/merge`, { other_id: other });
    location.href = `/customers/${keep}`;
  } catch (err) { showError(errBox, err); }
});
