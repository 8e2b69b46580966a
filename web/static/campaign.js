// One campaign: preview for a customer, test send, schedule, pause/resume/cancel, the live
// progress bar (pushed over the websocket, polled while running) and the report with charts.
import { api, el, clear, toast, showError, localTime } from "./api.js";
import { on } from "./ws.js";
import { barChart } from "./charts.js";
import { previewWidget } from "./preview.js";
import { progressOf } from "./progress.js";

const id = Number(document.getElementById("campaign").dataset.id);
const $ = (x) => document.getElementById(x);
const errBox = $("c-error");
let campaign = null;
let poll = 0;
let finishedRun = 0;

function showCampaign(c) {
  campaign = c;
  $("c-name").textContent = c.name;
  document.title = `${c.name} · commhub`;
  const s = c.schedule && c.schedule.active ? c.schedule : null;
  $("c-meta").textContent = (c.channel === "sms" ? "SMS campaign" : "Email campaign") + (c.messenger !== c.channel ? ` via ${c.messenger}` : "") + (c.from_address ? ` · from ${c.from_address}` : "") +
    (s ? (s.kind === "cron" ? ` · repeats ${s.cron} (${s.timezone})` : ` · once at ${localTime(s.run_at)}`) : "");
  const status = $("c-status");
  status.textContent = c.status;
  status.className = "badge " + c.status;
  $("c-reason").textContent = c.status_reason || "";
  const q = (a) => document.querySelector(`[data-action=${a}]`);
  q("pause").hidden = !["running", "scheduled"].includes(c.status);
  q("resume").hidden = c.status !== "paused";
  q("cancel").hidden = ["cancelled", "finished", "draft"].includes(c.status);
  $("schedule-go").disabled = c.status === "cancelled";
}

function showProgress(run) {
  if (!run) {
    $("c-percent").textContent = "not sent yet";
    $("c-counts").textContent = "";
    return;
  }
  const p = progressOf(run);
  $("c-progress").value = p.percent;
  $("c-percent").textContent = `${Math.floor(p.percent)} %`;
  $("c-counts").textContent = !run.materialised && !run.total ? "Preparing the recipient list…" :
    `${p.done} of ${p.total} done: ${run.sent} sent, ${run.failed} failed, ${run.suppressed} suppressed (opt-out), ${run.skipped} skipped` +
    (run.status_reason ? ` · ${run.status_reason}` : "") + ` · run of ${localTime(run.scheduled_for)}`;
  document.getElementById("progress-box").dataset.state = run.status;
  if (p.percent >= 100) {
    loadReport();
    // The campaign's own status moves on when its run ends: fetch it once per finished run.
    if (finishedRun !== run.run_id) { finishedRun = run.run_id; setTimeout(refresh, 500); }
  }
}

let latestRun = 0;
on("campaign.progress", (ev) => {
  if (ev.campaign_id !== id || ev.run_id < latestRun) return;
  latestRun = ev.run_id;
  showProgress(ev);
});

async function refresh() {
  try {
    const [c, p] = await Promise.all([api("GET", `/api/v1/campaigns/${id}`), api("GET", `/api/v1/campaigns/${id}/progress`)]);
    showCampaign(c);
    const run = p.runs[0];
    if (run && run.run_id >= latestRun) { latestRun = run.run_id; showProgress(run); } else if (!run) showProgress(null);
    // Poll as a safety net while something is in flight (the socket may be reconnecting).
    clearTimeout(poll);
    if (["running", "scheduled"].includes(c.status) || (run && run.status === "sending")) poll = setTimeout(refresh, 2000);
  } catch (err) { showError(errBox, err); }
}

for (const action of ["pause", "resume", "cancel"]) {
  document.querySelector(`[data-action=${action}]`).addEventListener("click", async () => {
    if (action === "cancel" && !confirm("Cancel this campaign? Messages not sent yet will not go.")) return;
    try { showCampaign(await api("POST", `/api/v1/campaigns/${id}/${action}`)); refresh(); }
    catch (err) { showError(errBox, err); }
  });
}

// ---- schedule ----
const sform = $("schedule-form");
sform.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const box = sform.querySelector(".error");
  box.hidden = true;
  const when = sform.elements.when.value;
  let body;
  if (when === "now") body = { now: true };
  else if (when === "at") {
    if (!sform.elements.at.value) { showError(box, new Error("Pick a date and time.")); return; }
    // The browser knows the user's offset: send an aware time so nobody guesses the zone.
    body = { at: new Date(sform.elements.at.value).toISOString() };
  } else body = { cron: sform.elements.cron.value.trim(), timezone: campaign ? campaign.timezone : "UTC" };
  try {
    const r = await api("POST", `/api/v1/campaigns/${id}/schedule`, body);
    toast(when === "now" ? "Sending started." : "Scheduled.");
    if (r.campaign) showCampaign(r.campaign);
    refresh();
  } catch (err) { showError(box, err); }
});
$("schedule-clear").addEventListener("click", async () => {
  try { await api("POST", `/api/v1/campaigns/${id}/schedule`, { clear: true }); refresh(); toast("Schedule cleared."); }
  catch (err) { showError(sform.querySelector(".error"), err); }
});

// ---- preview and test ----
previewWidget((customerId) => api("POST", `/api/v1/campaigns/${id}/preview`, customerId ? { customer_id: customerId } : {}));
$("test-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const to = ev.target.elements.to.value.trim();
  try { const r = await api("POST", `/api/v1/campaigns/${id}/test`, { to }); toast(`Test sent to ${r.to}.`); }
  catch (err) { toast("Test not sent: " + err.message, true); }
});

// ---- report ----
let reportPending = 0;
function loadReport() {
  clearTimeout(reportPending);
  reportPending = setTimeout(async () => {
    try {
      const r = await api("GET", `/api/v1/campaigns/${id}/report`);
      const t = r.totals;
      const tile = (n, label) => el("div", { class: "tile" }, el("div", { class: "n" }, String(n)), el("div", { class: "l" }, label));
      $("r-tiles").replaceChildren(tile(t.total, "recipients"), tile(t.sent, "sent"), tile(t.delivered, "delivered"),
        tile(t.failed + t.bounced, "failed or bounced"), tile(t.opened, "opened"), tile(t.replied, "replied"),
        tile(t.unsubscribed, "unsubscribed"), tile(`${(100 * t.reply_rate).toFixed(1)} %`, "reply rate"));
      const names = ["sent", "delivered", "failed", "bounced", "opened", "replied", "unsubscribed"];
      barChart($("r-runs"), { title: "Per run", labels: r.runs.map((x) => localTime(x.scheduled_for).slice(0, 12)),
        series: names.map((name) => ({ name, values: r.runs.map((x) => x[name]) })) });
      barChart($("r-sources"), { title: "Per customer source", labels: r.by_source.map((x) => x.source || "(none)"),
        series: ["sent", "failed", "opened", "replied"].map((name) => ({ name, values: r.by_source.map((x) => x[name]) })) });
      const tbody = document.querySelector("#r-table tbody");
      clear(tbody);
      for (const x of r.runs) {
        tbody.append(el("tr", {}, el("td", {}, localTime(x.scheduled_for)), el("td", {}, el("span", { class: "badge " + x.status }, x.status)),
          ...["total", "sent", "delivered", "failed", "bounced", "opened", "replied", "unsubscribed"].map((k) => el("td", { class: "num" }, String(x[k])))));
      }
      if (!r.runs.length) tbody.append(el("tr", {}, el("td", { colspan: 10, class: "muted" }, "Not sent yet.")));
    } catch (err) { showError(errBox, err); }
  }, 300);
}

refresh();
loadReport();
