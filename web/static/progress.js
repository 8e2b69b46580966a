// How far a campaign run is, from its counts (shared by the list and the campaign page).
export function progressOf(run) {
  const done = run.sent + run.failed + run.suppressed + run.skipped;
  const total = run.total;
  const finished = run.status === "finished" || (run.materialised && total > 0 && run.queued === 0);
  const percent = total ? (finished ? 100 : Math.min(99.9, (100 * done) / total)) : (run.materialised ? 100 : 0);
  return { done, total, percent };
}
