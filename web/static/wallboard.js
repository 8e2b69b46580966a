// Live wallboard: calls in progress and agents' states; pushed events trigger a refresh and a
// slow poll covers anything the socket missed. Durations tick locally.
import { api, el, clear, duration, showError } from "./api.js";
import { on } from "./ws.js";

const $ = (id) => document.getElementById(id);
let snapshot = { calls: [], agents: [], link: "off" };
let fetchedAt = Date.now();
let timer = 0;

function since(iso) {
  return iso ? Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000) : 0;
}

function render() {
  const calls = snapshot.calls || [];
  const agents = snapshot.agents || [];
  const tbody = $("live-calls").querySelector("tbody");
  clear(tbody);
  for (const c of calls) {
    tbody.append(el("tr", { dataset: { id: c.linkedid } },
      el("td", {}, el("span", { class: "badge " + c.state }, c.state === "up" ? "talking" : c.state)),
      el("td", {}, c.direction || ""),
      el("td", { class: "nowrap" }, c.caller || "withheld"),
      el("td", { class: "nowrap" }, c.callee || ""),
      el("td", {}, (c.agents || []).join(", ")),
      el("td", {}, c.queue || ""),
      el("td", { class: "num", dataset: { since: c.answered_at || c.started_at } }, duration(since(c.answered_at || c.started_at)))));
  }
  if (!calls.length) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No calls right now.")));
  const list = $("agents");
  clear(list);
  for (const a of agents) {
    const label = a.state === "idle" ? "available" : a.state === "up" ? "on a call" : a.state;
    list.append(el("li", { dataset: { agent: a.username } },
      el("span", {}, el("strong", {}, a.username), a.extension ? el("span", { class: "muted small" }, " · " + a.extension) : ""),
      el("span", { class: "badge " + (a.state === "idle" ? "available" : a.state) }, label)));
  }
  if (!agents.length) list.append(el("li", { class: "muted" }, "No agents with a phone."));
  const ringing = calls.filter((c) => c.state === "ringing");
  $("n-calls").textContent = String(calls.length);
  $("n-ringing").textContent = String(ringing.length);
  $("n-up").textContent = String(calls.filter((c) => c.state === "up").length);
  $("n-idle").textContent = String(agents.filter((a) => a.state === "idle").length);
  $("n-longest").textContent = ringing.length ? duration(Math.max(...ringing.map((c) => since(c.started_at)))) : "–";
  const link = $("pbx-link");
  link.textContent = "PBX link: " + (snapshot.link || "off");
  link.className = "badge " + (snapshot.link === "up" ? "answered" : "missed");
}

async function refresh() {
  try {
    snapshot = await api("GET", "/api/v1/calls/live");
    fetchedAt = Date.now();
    $("wall-error").hidden = true;
    render();
  } catch (err) { showError($("wall-error"), err); }
}

// Coalesce bursts of events into one request.
function soon() { clearTimeout(timer); timer = setTimeout(refresh, 150); }

on("calls.live", (ev) => { if (ev.calls) { snapshot = ev; fetchedAt = Date.now(); render(); } else soon(); });
on("calls.ended", soon);
on("call.ringing", soon);
on("call.answered", soon);
on("ami.link", soon);
on("link.open", soon);

setInterval(() => {
  for (const td of document.querySelectorAll("td[data-since]")) td.textContent = duration(since(td.dataset.since));
  // Poll slowly while visible: ringing/answered of other agents' calls are not pushed to us.
  if (!document.hidden && Date.now() - fetchedAt > 3000) refresh();
}, 1000);
refresh();
