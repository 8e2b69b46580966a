// Template editor: checked as you type (the server names part and line of a mistake), saved,
// previewed for a chosen customer; SMS shows its length and parts while you type.
import { api, el, clear, debounce, toast, showError } from "./api.js";
import { previewWidget } from "./preview.js";

const form = document.getElementById("template-form");
const errBox = form.querySelector(".error");
const validity = document.getElementById("validity");
const smsCount = document.getElementById("sms-count");
let current = null;
let dirty = false;

function parts() {
  const f = form.elements;
  const channel = f.channel.value;
  return channel === "sms"
    ? { channel, subject: "", html: "", text: f.text.value }
    : { channel, subject: f.subject.value, html: f.html.value, text: f.text.value };
}

function layout() {
  const sms = form.elements.channel.value === "sms";
  for (const part of ["subject", "html"]) form.querySelector(`[data-part=${part}]`).hidden = sms;
  document.getElementById("text-label").textContent = sms ? "SMS text" : "Plain-text body";
  smsCount.hidden = !sms;
  form.elements.channel.disabled = Boolean(current);
}

function mark(problem) {
  for (const label of form.querySelectorAll("[data-part]")) label.classList.toggle("error", problem && label.dataset.part === problem.part);
}

const check = debounce(async () => {
  try {
    await api("POST", "/api/v1/templates/validate", parts());
    validity.textContent = "✓ renders";
    validity.className = "badge answered";
    mark(null);
    errBox.hidden = true;
  } catch (err) {
    validity.textContent = "✗ " + err.message;
    validity.className = "badge missed";
    mark({ part: err.field });
  }
}, 400);

const countSms = debounce(async () => {
  const text = form.elements.text.value;
  if (form.elements.channel.value !== "sms") return;
  try {
    const p = await api("POST", "/api/v1/messages/sms/preview", { text });
    smsCount.textContent = `${text.length} characters as typed · ${p.encoding} · ${p.segments} SMS part${p.segments === 1 ? "" : "s"} (placeholders change the length; see the preview)`;
  } catch (err) {
    smsCount.textContent = `${text.length} characters as typed`;
  }
}, 250);

form.addEventListener("input", () => { dirty = true; check(); countSms(); });
form.elements.channel.addEventListener("change", () => { layout(); check(); countSms(); });

function edit(t) {
  current = t;
  dirty = false;
  errBox.hidden = true;
  document.getElementById("editor-title").textContent = t ? t.name : "New template";
  const f = form.elements;
  f.name.value = t ? t.name : "";
  f.channel.value = t ? t.channel : "email";
  f.subject.value = t ? t.subject : "";
  f.html.value = t ? t.html : "";
  f.text.value = t ? t.text : "";
  document.getElementById("delete-template").hidden = !t;
  validity.textContent = "";
  layout();
  countSms();
}

async function save() {
  const body = { name: form.elements.name.value.trim(), ...parts() };
  const saved = current
    ? await api("PATCH", `/api/v1/templates/${current.id}`, body)
    : await api("POST", "/api/v1/templates", body);
  edit(saved);
  await loadList();
  return saved;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try { await save(); toast("Template saved."); } catch (err) { showError(errBox, err); }
});

async function loadList() {
  const list = document.getElementById("templates");
  const page = await api("GET", "/api/v1/templates");
  clear(list);
  for (const t of page.items) {
    list.append(el("li", {}, el("button", { type: "button", class: "small quiet", onclick: () => edit(t) }, t.name), el("span", { class: "badge" }, t.channel)));
  }
  if (!page.items.length) list.append(el("li", { class: "muted" }, "No templates yet."));
}

document.getElementById("new-template").addEventListener("click", () => edit(null));
document.getElementById("delete-template").addEventListener("click", async () => {
  if (!current || !confirm(`Delete template ${current.name}?`)) return;
  try { await api("DELETE", `/api/v1/templates/${current.id}`); edit(null); await loadList(); }
  catch (err) { showError(errBox, err); }
});

// The preview renders the saved template: unsaved edits are saved first.
previewWidget(async (customerId) => {
  if (!current || dirty) {
    try { await save(); } catch (err) { showError(errBox, err); return null; }
  }
  return api("POST", `/api/v1/templates/${current.id}/preview`, customerId ? { customer_id: customerId } : {});
});

edit(null);
loadList().catch((err) => showError(errBox, err));
