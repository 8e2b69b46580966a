"""Customer import from the browser: upload a CSV/XLSX file, import it in the background, poll.

Jobs live in this process's memory (the page polls the process that took the upload); the
imported rows themselves are committed batch by batch by hub.importer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from hub.errors import CommhubError
from hub.importer import ImportReport, build_mapping, describe_mapping, import_customers, open_table
from hub.services import Hub
from hub.users import audit
from web.auth import has_role, require_role
from web.errors import api_error
from web.keys import HUB

log = logging.getLogger(__name__)
SUFFIXES = (".csv", ".txt", ".xlsx", ".xlsm")
KEEP_JOBS = 50
SHOW_REJECTED = 200


@dataclass
class ImportJob:
    """One upload being imported: progress for the bar, then the report."""

    id: str
    user_id: int
    filename: str
    dry_run: bool
    state: str = "queued"  # queued | running | done | failed
    done: int = 0
    total: int | None = None
    description: str = ""
    columns: str = ""
    error: str = ""
    totals: dict[str, int] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON shape (GET /api/v1/customers/import/{job})."""
        percent = 100.0 if self.state == "done" else 0.0
        if self.state != "done" and self.total:
            percent = min(99.0, round(100.0 * self.done / self.total, 1))
        return {
            "id": self.id,
            "filename": self.filename,
            "dry_run": self.dry_run,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "percent": percent,
            "description": self.description,
            "columns": self.columns,
            "error": self.error,
            "totals": self.totals,
            "rejected": self.rejected,
            "seconds": round(self.seconds or (time.monotonic() - self.started), 2),
        }


class ImportJobs:
    """The jobs of this process and their tasks (cancelled on shutdown)."""

    def __init__(self) -> None:
        self.jobs: dict[str, ImportJob] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, job: ImportJob) -> None:
        """Remember a job, forgetting the oldest finished ones beyond KEEP_JOBS."""
        self.jobs[job.id] = job
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        for old in finished[: max(0, len(self.jobs) - KEEP_JOBS)]:
            del self.jobs[old.id]

    def spawn(self, coro: Any) -> None:
        """Run a job in the background."""
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Cancel running imports (batches already committed stay)."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


JOBS = web.AppKey("import_jobs", ImportJobs)


def _copy(source: IO[bytes], suffix: str) -> Path:
    handle, name = tempfile.mkstemp(prefix="commhub-import-", suffix=suffix)
    with os.fdopen(handle, "wb") as target:
        source.seek(0)
        shutil.copyfileobj(source, target)
    return Path(name)


async def _run(hub: Hub, job: ImportJob, path: Path, source: str) -> None:
    job.state = "running"
    try:
        table = await asyncio.to_thread(open_table, path)
        try:
            mapping = build_mapping(table.columns)
            job.description = table.description
            job.columns = describe_mapping(table.columns, mapping)
            job.total = table.total

            def progress(done: int, total: int | None) -> None:
                job.done = done
                if total is not None:
                    job.total = total

            report: ImportReport = await import_customers(
                hub.sessions,
                table.rows,
                mapping,
                hub.region,
                columns=table.columns,
                source=source,
                dry_run=job.dry_run,
                progress=progress,
                total=table.total,
            )
        finally:
            table.close()
        job.totals = report.totals
        job.done = job.totals["rows"]
        job.total = job.totals["rows"]
        job.rejected = [
            {"row": r.row, "reason": r.reason} for r in report.rejected()[:SHOW_REJECTED]
        ]
        job.state = "done"
        async with hub.sessions() as session, session.begin():
            await audit(
                session,
                job.user_id,
                "customer.import",
                job.filename[:128],
                dry_run=job.dry_run,
                **job.totals,
            )
    except CommhubError as err:
        job.state, job.error = "failed", str(err)
    except Exception as err:  # the job must end in a state the page can show
        log.exception("import job %s failed", job.id)
        job.state, job.error = "failed", f"internal error ({type(err).__name__}); see the log"
    finally:
        job.seconds = time.monotonic() - job.started
        with contextlib.suppress(OSError):
            await asyncio.to_thread(path.unlink)


async def start_import(request: web.Request) -> web.Response:
    """POST /api/v1/customers/import (multipart: file, source?, dry_run?) → 202 {"job": id, ...}."""
    user = require_role(request, "marketer", "supervisor")
    hub = request.app[HUB]
    if not request.content_type.startswith("multipart/"):
        raise api_error(400, "bad_upload", "send the file as multipart/form-data (field 'file')")
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField) or not upload.filename:
        raise api_error(400, "bad_upload", "no file in the upload (field 'file')")
    filename = Path(upload.filename).name
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise api_error(400, "bad_upload", "the file must be .csv or .xlsx")
    source = str(form.get("source", "") or "").strip()
    dry_run = str(form.get("dry_run", "")).lower() in ("1", "true", "on", "yes")
    path = await asyncio.to_thread(_copy, upload.file, suffix)
    job = ImportJob(id=uuid.uuid4().hex, user_id=user.id, filename=filename, dry_run=dry_run)
    jobs = request.app[JOBS]
    jobs.add(job)
    jobs.spawn(_run(hub, job, path, source))
    return web.json_response({"job": job.id, **job.as_dict()}, status=202)


async def import_status(request: web.Request) -> web.Response:
    """GET /api/v1/customers/import/{job}: progress, then totals and rejected rows."""
    user = require_role(request, "marketer", "supervisor")
    job = request.app[JOBS].jobs.get(request.match_info["job"])
    if job is None or (job.user_id != user.id and not has_role(user, "admin")):
        raise api_error(404, "not_found", "no such import job (jobs are kept per server process)")
    return web.json_response(job.as_dict())


def setup(app: web.Application) -> None:
    """Register routes."""
    app[JOBS] = ImportJobs()

    async def close_jobs(app: web.Application) -> None:
        await app[JOBS].close()

    app.on_shutdown.append(close_jobs)
    app.router.add_post("/api/v1/customers/import", start_import)
    app.router.add_get("/api/v1/customers/import/{job}", import_status)
