// Small helpers shared by every page: JSON calls with the CSRF header, safe DOM building.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// fetch JSON; throws ApiError with the server's message on a non-2xx answer.
export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrfToken();
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "offline", "The server cannot be reached; check the connection.");
  }
  if (resp.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new ApiError(401, "unauthenticated", "Your session has ended; log in again.");
  }
  const type = resp.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || "http_" + resp.status,
      err.message || resp.statusText || "request failed", err.field || err.line);
  }
  return data;
}

// URL query from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? "?" + s : "";
}

// Build an element. Children are nodes or strings (always inserted as text, never as HTML).
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else node.setAttribute(k, String(v));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

// Times are stored in UTC; people read them in their own zone.
export function localTime(iso, short) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  return short ? timeOnly.format(d) : dateTime.format(d);
}

export function timeEl(iso, short) {
  return el("time", { datetime: iso || "" }, localTime(iso, short));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "";
  const s = Math.round(Number(seconds));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m % 60)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

let toastTimer = 0;
export function toast(message, bad) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = message;
  box.classList.toggle("bad", Boolean(bad));
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, bad ? 7000 : 3500);
}

export function debounce(fn, ms) {
  let t = 0;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}

export function me() {
  const b = document.body.dataset;
  return {
    id: Number(b.userId || 0), username: b.user || "", role: b.role || "",
    extension: b.extension || "", recordings: b.recordings === "yes",
  };
}

// A form's fields as an object (empty strings kept so PATCH can clear a field).
export function formObject(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (k === "csrf_token") continue;
    out[k] = typeof v === "string" ? v.trim() : v;
  }
  return out;
}

// Show an API error next to a form (role=alert so screen readers hear it).
export function showError(box, err) {
  if (!box) { toast(err.message || String(err), true); return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}
