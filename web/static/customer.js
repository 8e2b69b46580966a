// Customer page: edit, delete, timeline paging, quick note, email/SMS, click-to-call.
import { api, toast, formObject, showError } from "./api.js";
import { timelineLoader, wireActions, fillRecipients, clickToCall } from "./card.js";

const root = document.getElementById("customer");
let customer = JSON.parse(document.getElementById("customer-data").textContent);
const list = document.getElementById("timeline");
const more = document.getElementById("timeline-more");
const timeline = timelineLoader(list, more);
timeline.attach(customer.id, more.dataset.cursor);

for (const btn of root.querySelectorAll("button[data-call]")) {
  btn.addEventListener("click", () => clickToCall({ number: btn.dataset.call }));
}

const actions = document.getElementById("card-actions");
if (actions) {
  fillRecipients(actions, customer);
  wireActions(actions, () => customer, (item) => {
    if (item) timeline.prepend(item); else timeline.reload().catch(() => {});
  });
}

// ---- edit ----
const form = document.getElementById("edit-form");
const toggle = document.getElementById("edit-toggle");
function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const at = l.lastIndexOf(",");
    return at > 0 ? { value: l.slice(0, at).trim(), label: l.slice(at + 1).trim() } : { value: l, label: "" };
  });
}
if (form) {
  toggle.addEventListener("click", () => { form.hidden = !form.hidden; if (!form.hidden) form.elements.name.focus(); });
  document.getElementById("edit-cancel").addEventListener("click", () => { form.hidden = true; });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = formObject(form);
    const body = {
      name: f.name, company: f.company, source: f.source, city: f.city, region: f.region,
      notes: f.notes, birthday: f.birthday || null,
      phones: lines(f.phones), emails: lines(f.emails),
      tags: f.tags.split(",").map((t) => t.trim()).filter(Boolean),
    };
    try {
      customer = await api("PATCH", `/api/v1/customers/${customer.id}`, body);
      toast("Saved.");
      // Re-render from the server so every field shows what was stored (normalised numbers).
      location.reload();
    } catch (err) { showError(form.querySelector(".error"), err); }
  });
  const del = document.getElementById("delete");
  if (del) del.addEventListener("click", async () => {
    if (!confirm(`Delete ${customer.name}? Their calls and messages stay in the log.`)) return;
    try {
      await api("DELETE", `/api/v1/customers/${customer.id}`);
      location.href = "/customers";
    } catch (err) { showError(form.querySelector(".error"), err); }
  });
}
