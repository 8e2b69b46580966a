// Runs on every page: local times for server-rendered <time> elements.
import { localTime } from "./api.js";

for (const t of document.querySelectorAll("time[datetime]")) {
  if (t.dataset.local !== "no" && t.getAttribute("datetime")) {
    t.title = t.getAttribute("datetime");
    t.textContent = localTime(t.getAttribute("datetime"), t.dataset.short === "yes");
  }
}
