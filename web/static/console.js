// Agent console: the screen-pop as the phone rings (sound + browser notification), the card,
// quick note after the call, click-to-call, email/SMS, missed calls and callback reminders.
import { api, el, clear, toast, debounce, query, timeEl, localTime, formObject, showError, me } from "./api.js";
import { on } from "./ws.js";
import { timelineLoader, wireActions, fillRecipients, contactList, tagList, clickToCall, selectTab } from "./card.js";

const $ = (id) => document.getElementById(id);
const pop = $("pop");
const user = me();
let customer = null;        // the card shown
let call = null;            // {id, caller, state, answeredAt}
let timerTick = 0;
const timeline = timelineLoader($("timeline"), $("timeline-more"));

// ---- ring sound (generated, no audio file) and browser notifications ----
let audio = null;
let ringTimer = 0;
function unlockAudio() {
  try {
    audio = audio || new (window.AudioContext || window.webkitAudioContext)();
    if (audio.state === "suspended") audio.resume();
  } catch (err) { audio = null; }
}
function beep() {
  if (!audio || !$("sound-on").checked) return;
  const t = audio.currentTime;
  for (const [start, freq] of [[0, 440], [0.05, 480]]) {
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t + start);
    gain.gain.exponentialRampToValueAtTime(0.08, t + start + 0.05);
    gain.gain.exponentialRampToValueAtTime(0.0001, t + start + 1.2);
    osc.connect(gain).connect(audio.destination);
    osc.start(t + start);
    osc.stop(t + start + 1.3);
  }
}
function startRinging() {
  stopRinging();
  beep();
  let n = 0;
  // Ring for at most 30 s even if the end of the call never reaches us.
  ringTimer = setInterval(() => { if (++n > 10) stopRinging(); else beep(); }, 3000);
}
function stopRinging() { clearInterval(ringTimer); ringTimer = 0; }

function notifyState() {
  const box = $("notify-state");
  const btn = $("notify-enable");
  if (!("Notification" in window)) { box.textContent = "This browser has no notifications."; btn.hidden = true; return; }
  const p = Notification.permission;
  box.textContent = p === "granted" ? "Browser notifications are on." : p === "denied" ? "Notifications are blocked in the browser settings." : "Browser notifications are off.";
  btn.hidden = p !== "default";
}
$("notify-enable").addEventListener("click", async () => {
  unlockAudio();
  try { await Notification.requestPermission(); } catch (err) { /* old browsers */ }
  notifyState();
});
document.addEventListener("pointerdown", unlockAudio, { once: true });
document.addEventListener("keydown", unlockAudio, { once: true });

function notify(title, body) {
  if (!("Notification" in window) || Notification.permission !== "granted" || !document.hidden) return;
  try {
    const n = new Notification(title, { body, tag: "commhub-call", renotify: true });
    n.onclick = () => { window.focus(); n.close(); };
  } catch (err) { /* some platforms only allow notifications from a service worker */ }
}

// ---- the panel ----
function setState(state, text) {
  pop.classList.toggle("ringing", state === "ringing");
  pop.classList.toggle("oncall", state === "up");
  $("call-state").textContent = text;
  $("pop-hint").hidden = true;
  clearInterval(timerTick);
  $("call-timer").textContent = "";
  if (state === "up" && call && call.answeredAt) {
    const tick = () => {
      const s = Math.max(0, Math.round((Date.now() - call.answeredAt) / 1000));
      $("call-timer").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    };
    tick();
    timerTick = setInterval(tick, 1000);
  }
}

function showCard(card, opts = {}) {
  customer = card;
  $("unknown").hidden = true;
  $("card").hidden = false;
  $("card-name").textContent = card.name;
  $("card-company").textContent = card.company || "";
  $("card-link").href = `/customers/${card.id}`;
  $("card-contacts").replaceChildren(contactList(card, true));
  $("card-tags").replaceChildren(tagList(card.tags));
  $("card-notes").textContent = card.notes || "";
  const rem = $("card-reminders");
  clear(rem);
  if ((card.open_reminders || []).length) {
    rem.append(el("h3", {}, "Open reminders"),
      el("ul", { class: "list" }, card.open_reminders.map((r) => el("li", {}, el("span", {}, r.title), timeEl(r.due_at)))));
  }
  fillRecipients($("card-actions"), card);
  const noteForm = document.querySelector("form[data-form=note]");
  noteForm.elements.call_id.value = opts.callId || "";
  // The card's last interactions show at once; the full timeline follows from the API.
  if (card.last_interactions) timeline.show(card.id, card.last_interactions, null);
  timeline.show(card.id).catch((err) => toast(err.message, true));
}

function showUnknown(number) {
  customer = null;
  $("card").hidden = true;
  $("unknown").hidden = false;
  $("unknown-number").textContent = number || "(number withheld)";
  const form = $("create-form");
  form.reset();
  form.elements.phone.value = number || "";
  form.querySelector(".error").hidden = true;
}

$("create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const f = formObject(form);
  const body = { name: f.name, company: f.company, city: f.city, tags: f.tags ? f.tags.split(",") : [] };
  if (f.phone) body.phones = [f.phone];
  if (f.email) body.emails = [f.email];
  try {
    const created = await api("POST", "/api/v1/customers", body);
    const card = await api("GET", `/api/v1/customers/${created.id}`);
    showCard(card, { callId: call ? call.id : "" });
    toast("Customer created.");
  } catch (err) { showError(form.querySelector(".error"), err); }
});

wireActions($("card-actions"), () => customer, (item) => {
  if (item) timeline.prepend(item); else timeline.reload().catch(() => {});
});

// ---- live events ----
on("call.ringing", (ev) => {
  call = { id: ev.call_id, caller: ev.caller, state: "ringing", answeredAt: null };
  const who = ev.customer ? ev.customer.name : (ev.caller || "withheld number");
  setState("ringing", `Ringing: ${who}`);
  if (ev.customer) showCard(ev.customer, { callId: ev.call_id }); else showUnknown(ev.caller);
  startRinging();
  notify("Incoming call", ev.customer ? `${ev.customer.name}${ev.caller ? " · " + ev.caller : ""}` : (ev.caller || "Unknown caller"));
});

on("call.answered", (ev) => {
  if (!call || ev.call_id !== call.id) return;
  stopRinging();
  if (ev.extension && user.extension && ev.extension !== user.extension) {
    setState("", `Answered by extension ${ev.extension}`);
    return;
  }
  call.state = "up";
  call.answeredAt = Date.now();
  setState("up", `On call with ${customer ? customer.name : (call.caller || "caller")}`);
});

on("call.ended", (ev) => {
  if (!call || ev.call_id !== call.id) return;
  stopRinging();
  const answered = call.state === "up";
  setState("ended", answered ? "Call ended: add a quick note" : "Missed call");
  call.state = "ended";
  if (customer) {
    selectTab($("card-actions"), "note");
    const text = document.querySelector("form[data-form=note] textarea");
    if (answered) text.focus();
    timeline.reload().catch(() => {});
  }
  loadMissed();
  loadReminders();
});

on("reminder.due", (ev) => {
  const r = ev.reminder || ev;
  toast("Reminder: " + (r.title || "callback due"));
  notify("Reminder", r.title || "callback due");
  loadReminders();
});

let opened = 0;
// After a reconnect, catch up on what was missed while offline.
on("link.open", () => { if (opened++) { loadMissed(); loadReminders(); } });

// ---- search ----
const find = $("find");
const results = $("find-results");
const search = debounce(async () => {
  const q = find.value.trim();
  if (q.length < 2) { clear(results); return; }
  try {
    const page = await api("GET", "/api/v1/customers" + query({ q, limit: 8 }));
    if (find.value.trim() !== q) return;
    clear(results);
    for (const c of page.items) {
      const phone = (c.phones[0] || {}).value || (c.emails[0] || {}).value || "";
      results.append(el("li", {}, el("button", { type: "button", onclick: () => openCustomer(c.id) },
        el("strong", {}, c.name), c.company ? " · " + c.company : "", phone ? el("span", { class: "muted small" }, "  " + phone) : "")));
    }
    if (!page.items.length) results.append(el("li", { class: "muted small" }, "No match."));
  } catch (err) { toast(err.message, true); }
}, 200);
find.addEventListener("input", search);

async function openCustomer(id) {
  try {
    const card = await api("GET", `/api/v1/customers/${id}`);
    if (!call || call.state === "ended") { $("call-state").textContent = card.name; $("pop-hint").hidden = true; }
    showCard(card, { callId: call && call.state !== "ended" ? call.id : "" });
  } catch (err) { toast(err.message, true); }
}

// ---- missed calls and reminders ----
async function loadMissed() {
  const list = $("missed");
  try {
    const page = await api("GET", "/api/v1/calls" + query({ mine: 1, status: "missed", limit: 10 }));
    clear(list);
    for (const c of page.items) {
      const number = c.direction === "outbound" ? c.callee : c.caller;
      list.append(el("li", {},
        el("div", {},
          c.customer_id ? el("a", { href: `/customers/${c.customer_id}` }, c.customer_name || number || "customer") : el("span", {}, number || "withheld"),
          el("div", { class: "muted small" }, localTime(c.started_at), c.queue ? " · queue " + c.queue : "")),
        number ? el("button", { type: "button", class: "small", onclick: () => clickToCall({ number }) }, "Call back") : null));
    }
    if (!page.items.length) list.append(el("li", { class: "muted" }, "No missed calls."));
  } catch (err) {
    clear(list).append(el("li", { class: "muted" }, err.status === 404 ? "Call log not available." : err.message));
  }
}

async function loadReminders() {
  const list = $("reminders");
  try {
    const page = await api("GET", "/api/v1/reminders" + query({ mine: 1 }));
    clear(list);
    for (const r of page.items) {
      const li = el("li", {},
        el("div", {},
          r.customer_id ? el("a", { href: `/customers/${r.customer_id}` }, r.title) : el("span", {}, r.title),
          el("div", { class: "muted small" }, "due ", timeEl(r.due_at), r.phone ? " · " + r.phone : "")),
        el("div", { class: "row" },
          r.phone ? el("button", { type: "button", class: "small", onclick: () => clickToCall({ number: r.phone }) }, "Call") : null,
          el("button", { type: "button", class: "small quiet", onclick: async () => {
            try { await api("POST", `/api/v1/reminders/${r.id}/done`); li.remove(); toast("Done."); }
            catch (err) { toast(err.message, true); }
          } }, "Done")));
      list.append(li);
    }
    if (!page.items.length) list.append(el("li", { class: "muted" }, "Nothing to call back."));
  } catch (err) {
    clear(list).append(el("li", { class: "muted" }, err.status === 404 ? "Reminders not available." : err.message));
  }
}

$("missed-refresh").addEventListener("click", () => { loadMissed(); loadReminders(); });
notifyState();
loadMissed();
loadReminders();
// Deep link from a notification or the missed-calls list: /console#customer=<id>
const m = /customer=(\d+)/.exec(location.hash);
if (m) openCustomer(Number(m[1]));
