// New customer form (also reached from the console with the unknown caller's number).
import { api, formObject, showError } from "./api.js";

const form = document.getElementById("create-form");
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = formObject(form);
  const body = { name: f.name, company: f.company, city: f.city, notes: f.notes,
    tags: f.tags ? f.tags.split(",").map((t) => t.trim()).filter(Boolean) : [] };
  if (f.phone) body.phones = [f.phone];
  if (f.email) body.emails = [f.email];
  try {
    const created = await api("POST", "/api/v1/customers", body);
    location.href = `/customers/${created.id}`;
  } catch (err) { showError(form.querySelector(".error"), err); }
});
