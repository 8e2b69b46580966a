// Message preview for a chosen customer (or the sample one): subject, HTML in a sandboxed frame
// (no scripts, no same-origin), plain text, and for SMS the length and number of parts.
import { api, el, clear, debounce, query, showError } from "./api.js";

export function previewWidget(render) {
  const $ = (id) => document.getElementById(id);
  const input = $("preview-customer");
  const results = $("preview-results");
  const who = $("preview-who");
  const errBox = $("preview-error");
  let customer = null;

  input.addEventListener("input", debounce(async () => {
    const q = input.value.trim();
    clear(results);
    if (!q) { customer = null; who.textContent = "sample customer"; return; }
    if (q.length < 2) return;
    const page = await api("GET", "/api/v1/customers" + query({ q, limit: 8 }));
    for (const c of page.items) {
      results.append(el("li", {}, el("button", { type: "button", onclick: () => {
        customer = c;
        input.value = c.name;
        who.textContent = `for ${c.name} (#${c.id})`;
        clear(results);
        show();
      } }, el("strong", {}, c.name), c.company ? " · " + c.company : "", " ", el("span", { class: "muted small" }, (c.emails[0] || c.phones[0] || {}).value || ""))));
    }
  }, 200));

  async function show() {
    errBox.hidden = true;
    try {
      const r = await render(customer ? customer.id : null);
      if (!r) return;
      $("preview-out").hidden = false;
      $("preview-subject").textContent = r.subject || "";
      const frame = $("preview-html");
      frame.hidden = !r.html;
      // srcdoc in a sandbox without allow-scripts: the HTML is shown, nothing in it runs.
      frame.srcdoc = r.html || "";
      $("preview-text").textContent = r.text || "";
      $("preview-sms").textContent = r.segments ? `${r.length} characters · ${r.segments} SMS part${r.segments > 1 ? "s" : ""}` : "";
      if (!customer) who.textContent = "sample customer";
    } catch (err) { showError(errBox, err); }
  }
  $("preview-go").addEventListener("click", show);
  return { show, customer: () => customer };
}
