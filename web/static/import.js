// Import page: upload (with upload progress), then poll the job and move the bar to 100 %.
import { api, el, clear, csrfToken, showError } from "./api.js";

const form = document.getElementById("import-form");
const box = document.getElementById("job");
const bar = document.getElementById("job-progress");
const percent = document.getElementById("job-percent");
const title = document.getElementById("job-title");
const counts = document.getElementById("job-counts");
const errBox = form.querySelector(".error");

function setBar(value) {
  bar.value = value;
  percent.textContent = `${Math.round(value)} %`;
}

// XMLHttpRequest because fetch cannot report upload progress.
function upload(data) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/customers/import");
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (ev) => {
      if (ev.lengthComputable) { title.textContent = "Uploading…"; setBar(25 * ev.loaded / ev.total); }
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else reject(new Error((body && body.error && body.error.message) || `upload failed (${xhr.status})`));
    });
    xhr.addEventListener("error", () => reject(new Error("upload failed: the server cannot be reached")));
    xhr.send(data);
  });
}

async function poll(id) {
  for (;;) {
    const job = await api("GET", `/api/v1/customers/import/${id}`);
    show(job);
    if (job.state === "done" || job.state === "failed") return job;
    await new Promise((r) => setTimeout(r, 400));
  }
}

function show(job) {
  // The upload takes the first quarter of the bar, the import the rest.
  if (job.state === "done") setBar(100);
  else if (job.total) setBar(25 + 0.75 * Math.min(99, job.percent));
  const t = job.totals || {};
  if (job.state === "done") {
    title.textContent = job.dry_run ? "Dry run finished: nothing was changed" : "Import finished";
    counts.textContent = `${t.rows} rows: ${t.created} created, ${t.updated} updated, ${t.merged} merged, ${t.rejected} rejected · ${job.seconds} s`;
  } else if (job.state === "failed") {
    title.textContent = "Import failed";
    counts.textContent = job.error;
    counts.classList.add("error");
  } else {
    title.textContent = "Importing…";
    counts.textContent = job.total ? `${job.done} of ${job.total} rows` : `${job.done} rows`;
  }
  if (job.description) counts.title = `${job.description}; ${job.columns}`;
  const report = document.getElementById("job-report");
  const tbody = document.getElementById("job-rejected");
  clear(tbody);
  for (const r of job.rejected || []) tbody.append(el("tr", {}, el("td", { class: "num" }, String(r.row)), el("td", {}, r.reason)));
  report.hidden = !(job.rejected || []).length;
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  errBox.hidden = true;
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  box.hidden = false;
  counts.classList.remove("error");
  counts.textContent = "";
  setBar(0);
  try {
    const job = await upload(new FormData(form));
    await poll(job.id);
  } catch (err) {
    showError(errBox, err);
    box.hidden = true;
  } finally {
    button.disabled = false;
  }
});
