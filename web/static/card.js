// The customer card shared by the agent console and the customer page: timeline rows, quick note,
// email and SMS from the card, click-to-call. Everything a customer wrote goes in as text.
import { api, el, clear, timeEl, duration, toast, debounce, me, query, showError } from "./api.js";

const CHANNEL = { call: "Call", email: "Email", sms: "SMS", note: "Note", reminder: "Reminder" };
const ARROW = { inbound: "← in", outbound: "→ out", internal: "↔ internal" };

export function timelineItem(item) {
  const data = item.data || {};
  const meta = el("div", { class: "meta" },
    el("strong", {}, CHANNEL[item.channel] || item.channel),
    item.direction ? el("span", {}, ARROW[item.direction] || item.direction) : null,
    item.status ? el("span", { class: "badge " + item.status }, item.status) : null,
    timeEl(item.occurred_at),
    item.author || data.author ? el("span", {}, "by " + (item.author || data.author)) : null,
    item.channel === "call" && data.talk_seconds ? el("span", {}, "talk " + duration(data.talk_seconds)) : null,
  );
  const li = el("li", { class: item.channel, dataset: { id: String(item.id) } }, meta);
  const subject = item.channel === "email" ? data.subject : "";
  if (subject && subject !== item.summary) li.append(el("div", { class: "text" }, subject));
  if (item.summary) li.append(el("div", { class: "text" }, item.summary));
  const callId = data.call_id;
  if (item.channel === "call" && data.recording && callId && me().recordings) {
    li.append(recordingButton(callId));
  }
  return li;
}

export function recordingButton(callId) {
  const box = el("div", { class: "recording" });
  const btn = el("button", { type: "button", class: "small quiet" }, "▶ Recording");
  btn.addEventListener("click", () => {
    const audio = el("audio", { controls: true, preload: "none", src: `/api/v1/calls/${encodeURIComponent(callId)}/recording` });
    box.replaceChildren(audio);
    audio.play().catch(() => {});
  });
  box.append(btn);
  return box;
}

export function renderTimeline(list, items, append) {
  if (!append) clear(list);
  for (const item of items) list.append(timelineItem(item));
  if (!list.children.length) list.append(el("li", { class: "empty muted" }, "Nothing yet."));
}

// Fetches a customer's timeline into `list`; `more` (a button) pages on with the cursor.
export function timelineLoader(list, more) {
  let customerId = null;
  let cursor = null;
  async function load(append) {
    if (customerId === null) return;
    const id = customerId;
    const page = await api("GET", `/api/v1/customers/${id}/timeline` + query({ limit: 20, cursor: append ? cursor : "" }));
    if (id !== customerId) return;
    const empty = list.querySelector("li.empty");
    if (empty) empty.remove();
    renderTimeline(list, page.items, append);
    cursor = page.next;
    if (more) more.hidden = !cursor;
  }
  if (more) more.addEventListener("click", () => load(true).catch((e) => toast(e.message, true)));
  return {
    show(id, firstItems, nextCursor) {
      customerId = id;
      if (firstItems) {
        renderTimeline(list, firstItems);
        cursor = nextCursor || null;
        if (more) more.hidden = !cursor;
      }
      return firstItems ? Promise.resolve() : load(false);
    },
    // Adopt a server-rendered first page.
    attach(id, nextCursor) {
      customerId = id;
      cursor = nextCursor || null;
      if (more) more.hidden = !cursor;
    },
    reload() { return load(false); },
    prepend(item) {
      const empty = list.querySelector("li.empty");
      if (empty) empty.remove();
      list.prepend(timelineItem(item));
    },
  };
}

export async function clickToCall(target) {
  try {
    await api("POST", "/api/v1/calls/originate", target);
    toast("Calling… your phone rings first.");
  } catch (err) {
    toast("Could not place the call: " + err.message, true);
  }
}

// Wires the forms inside `root` (note, email, SMS, tabs). `current()` returns the customer object
// shown ({id, phones, emails, ...}) or null; `onLogged(item)` receives new timeline rows.
export function wireActions(root, current, onLogged) {
  const noteForm = root.querySelector("form[data-form=note]");
  const emailForm = root.querySelector("form[data-form=email]");
  const smsForm = root.querySelector("form[data-form=sms]");

  for (const tab of root.querySelectorAll(".tabs [role=tab]")) {
    tab.addEventListener("click", () => selectTab(root, tab.dataset.tab));
  }

  if (noteForm) noteForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const customer = current();
    const text = noteForm.elements.text.value.trim();
    const errBox = noteForm.querySelector(".error");
    errBox.hidden = true;
    if (!customer || !text) return;
    const body = { text };
    if (noteForm.elements.call_id && noteForm.elements.call_id.value) body.call_id = noteForm.elements.call_id.value;
    try {
      const item = await api("POST", `/api/v1/customers/${customer.id}/notes`, body);
      noteForm.reset();
      onLogged(item);
      toast("Note saved.");
    } catch (err) { showError(errBox, err); }
  });

  if (emailForm) emailForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const customer = current();
    const errBox = emailForm.querySelector(".error");
    errBox.hidden = true;
    if (!customer) return;
    const f = emailForm.elements;
    const body = { customer_id: customer.id, subject: f.subject.value.trim(), text: f.text.value };
    if (f.to && f.to.value) body.to = f.to.value;
    try {
      const sent = await api("POST", "/api/v1/messages/email", body);
      emailForm.reset();
      fillRecipients(root, customer);
      toast("Email sent.");
      onLogged(sent && sent.interaction ? sent.interaction : null);
    } catch (err) { showError(errBox, err); }
  });

  if (smsForm) {
    const counter = smsForm.querySelector("[data-sms-count]");
    const preview = debounce(async () => {
      const text = smsForm.elements.text.value;
      if (!text) { counter.textContent = ""; return; }
      try {
        const p = await api("POST", "/api/v1/messages/sms/preview", { text });
        counter.textContent = `${text.length} characters · ${p.encoding} · ${p.segments} SMS`;
      } catch (err) { counter.textContent = `${text.length} characters`; }
    }, 250);
    smsForm.elements.text.addEventListener("input", preview);
    smsForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const customer = current();
      const errBox = smsForm.querySelector(".error");
      errBox.hidden = true;
      if (!customer) return;
      const f = smsForm.elements;
      const body = { customer_id: customer.id, text: f.text.value };
      if (f.to && f.to.value) body.to = f.to.value;
      try {
        const sent = await api("POST", "/api/v1/messages/sms", body);
        smsForm.reset();
        counter.textContent = "";
        fillRecipients(root, customer);
        toast("SMS sent.");
        onLogged(sent && sent.interaction ? sent.interaction : null);
      } catch (err) { showError(errBox, err); }
    });
  }
}

export function selectTab(root, name) {
  for (const tab of root.querySelectorAll(".tabs [role=tab]")) {
    const on = tab.dataset.tab === name;
    tab.setAttribute("aria-selected", on ? "true" : "false");
    const panel = root.querySelector(`[data-panel="${tab.dataset.tab}"]`);
    if (panel) panel.hidden = !on;
  }
}

// The recipient pickers list the card's own addresses and numbers.
export function fillRecipients(root, customer) {
  for (const [name, kind] of [["email", "emails"], ["sms", "phones"]]) {
    const select = root.querySelector(`form[data-form=${name}] select[name=to]`);
    if (!select) continue;
    clear(select);
    const items = (customer && customer[kind]) || [];
    for (const c of items) {
      select.append(el("option", { value: c.value }, c.label ? `${c.value} (${c.label})` : c.value));
    }
    if (name === "sms") {
      const mobile = items.findIndex((c) => c.label === "mobile");
      if (mobile >= 0) select.selectedIndex = mobile;
    }
    select.disabled = !items.length;
  }
}

// Contact points with a Call button (phones) and a mail link (emails).
export function contactList(customer, canCall) {
  const ul = el("ul", { class: "contacts" });
  for (const p of customer.phones || []) {
    ul.append(el("li", {},
      el("span", { class: "nowrap" }, "☎ " + p.value),
      p.label ? el("span", { class: "muted small" }, p.label) : null,
      canCall ? el("button", { type: "button", class: "small", dataset: { call: p.value }, onclick: () => clickToCall({ number: p.value }) }, "Call") : null,
    ));
  }
  for (const e of customer.emails || []) {
    ul.append(el("li", {}, el("span", {}, "✉ " + e.value), e.label ? el("span", { class: "muted small" }, e.label) : null));
  }
  if (!ul.children.length) ul.append(el("li", { class: "muted" }, "No phone or email on file."));
  return ul;
}

export function tagList(tags) {
  return el("div", { class: "tags" }, (tags || []).map((t) => el("span", { class: "tag" }, t)));
}
