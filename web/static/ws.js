// The live link: one websocket that reconnects by itself (backoff with jitter) and says when it
// is offline. Pages subscribe to event types; the banner and the header badge show the state.
const listeners = new Map();
const stateListeners = new Set();
let socket = null;
let attempt = 0;
let pingTimer = 0;
let retryTimer = 0;
let online = false;
let started = false;
let lastMessage = 0;

function setOnline(value) {
  online = value;
  const banner = document.getElementById("offline");
  if (banner) banner.hidden = value;
  const badge = document.getElementById("link-state");
  if (badge) {
    badge.hidden = false;
    badge.textContent = value ? "live" : "offline";
    badge.classList.toggle("down", !value);
  }
  document.body.dataset.live = value ? "yes" : "no";
  for (const fn of stateListeners) fn(value);
}

function scheduleRetry() {
  clearTimeout(retryTimer);
  // 0.5 s, 1 s, 2 s ... capped at 15 s, with jitter so a restarted server is not stampeded.
  const base = Math.min(15000, 500 * 2 ** Math.min(attempt, 5));
  const delay = base / 2 + Math.random() * base / 2;
  attempt += 1;
  retryTimer = setTimeout(open, delay);
}

function open() {
  clearTimeout(retryTimer);
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    scheduleRetry();
    return;
  }
  socket = ws;
  ws.addEventListener("open", () => {
    attempt = 0;
    lastMessage = Date.now();
    setOnline(true);
    clearInterval(pingTimer);
    pingTimer = setInterval(() => {
      if (ws.readyState !== WebSocket.OPEN) return;
      // A link that went silent (laptop sleep, dead proxy) is closed and reopened.
      if (Date.now() - lastMessage > 60000) { ws.close(); return; }
      ws.send("ping");
    }, 20000);
    dispatch({ type: "link.open" });
  });
  ws.addEventListener("message", (msg) => {
    lastMessage = Date.now();
    let event;
    try { event = JSON.parse(msg.data); } catch (err) { return; }
    if (event && typeof event.type === "string") dispatch(event);
  });
  ws.addEventListener("close", () => {
    clearInterval(pingTimer);
    if (socket === ws) socket = null;
    setOnline(false);
    scheduleRetry();
  });
}

function dispatch(event) {
  for (const key of [event.type, "*"]) {
    for (const fn of listeners.get(key) || []) {
      try { fn(event); } catch (err) { console.error("handler for", event.type, "failed", err); }
    }
  }
}

export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  start();
  return () => listeners.get(type).delete(fn);
}

export function onState(fn) {
  stateListeners.add(fn);
  fn(online);
}

export function isOnline() { return online; }

export function start() {
  if (started) return;
  started = true;
  // Reconnect at once when the machine wakes up or the network comes back.
  window.addEventListener("online", () => { if (!socket) { attempt = 0; open(); } });
  open();
}
