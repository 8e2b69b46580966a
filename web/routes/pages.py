"""Server-rendered pages: one screen per job, the role checked on every page (403, no loop)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from hub import customers as svc
from hub.errors import NotFound, ValidationError
from hub.models.customers import Customer, CustomerTag
from hub.models.users import User
from hub.reminders import open_reminders, reminder_to_dict
from hub.telephony import calllog
from hub.telephony.service import call_to_dict
from hub.timeline import interaction_to_dict, timeline
from web.app import JINJA
from web.auth import has_role
from web.keys import CSRF, HUB, USER
from web.routes.audit import parse_when, query_audit


@dataclass(frozen=True)
class NavItem:
    """One entry of the top navigation and the roles that see it."""

    href: str
    label: str
    roles: tuple[str, ...]


NAV = (
    NavItem("/console", "Console", ("agent",)),
    NavItem("/customers", "Customers", ("agent", "marketer", "supervisor")),
    NavItem("/marketing/campaigns", "Campaigns", ("marketer",)),
    NavItem("/marketing/segments", "Segments", ("marketer",)),
    NavItem("/marketing/templates", "Templates", ("marketer",)),
    NavItem("/supervisor/wallboard", "Wallboard", ("supervisor",)),
    NavItem("/supervisor/calls", "Call log", ("supervisor",)),
    NavItem("/supervisor/stats", "Figures", ("supervisor",)),
    NavItem("/admin/audit", "Audit log", ("supervisor",)),
)
HOME = {
    "agent": "/console",
    "supervisor": "/supervisor/wallboard",
    "marketer": "/marketing/campaigns",
    "admin": "/supervisor/calls",
}
CUSTOMER_READERS = ("agent", "marketer", "supervisor")
PAGE_SIZE = 25


def _user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name or user.username,
        "role": user.role,
        "extension": user.extension or "",
        "sees_recordings": has_role(user, "supervisor"),
    }


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    """Render a page with the layout's common context (user, CSRF token, navigation)."""
    user = request.get(USER)
    path = request.path
    nav = []
    if user is not None:
        nav = [
            {"href": item.href, "label": item.label, "active": path.startswith(item.href)}
            for item in NAV
            if has_role(user, *item.roles)
        ]
    html = (
        request.app[JINJA]
        .get_template(template)
        .render(
            user=_user_view(user) if user is not None else None,
            csrf_token=request.get(CSRF) or "",
            nav=nav,
            **context,
        )
    )
    response = web.Response(text=html, content_type="text/html", status=status)
    # Pages carry personal data and a CSRF token: never cache them in shared caches.
    response.headers["Cache-Control"] = "private, no-store"
    return response


def error_page(request: web.Request, status: int, title: str, message: str) -> web.HTTPException:
    """An HTML error page to raise (the layout stays, so the user can navigate away)."""
    page = render(request, "error.html", status=status, title=title, message=message)
    exc_class = {403: web.HTTPForbidden, 404: web.HTTPNotFound}.get(status, web.HTTPBadRequest)
    exc = exc_class(text=page.text, content_type="text/html")
    exc.headers["Cache-Control"] = "private, no-store"
    return exc


def guard(request: web.Request, *roles: str) -> User:
    """The logged-in user if their role may see this page; else a 403 page (never a redirect)."""
    user: User | None = request.get(USER)
    if user is None:  # the auth middleware redirects anonymous visitors before we get here
        raise web.HTTPFound(f"/login?next={request.rel_url}")
    if not has_role(user, *roles):
        raise error_page(
            request,
            403,
            "Not for your role",
            f"This page is for {' or '.join(roles)} users; you are logged in as "
            f"{user.username} ({user.role}).",
        )
    return user


async def home(request: web.Request) -> web.Response:
    """GET /: each role lands on the screen it works in."""
    user = request.get(USER)
    assert user is not None
    raise web.HTTPFound(HOME.get(user.role, "/customers"))


async def console(request: web.Request) -> web.Response:
    """GET /console: the agent's live panel (screen-pop, card, missed calls, reminders)."""
    guard(request, "agent")
    return render(request, "console.html", title="Console")


async def _tag_and_source_choices(request: web.Request) -> tuple[list[str], list[str]]:
    hub = request.app[HUB]
    async with hub.sessions() as session:
        tags = (
            await session.scalars(
                select(CustomerTag.tag).distinct().order_by(CustomerTag.tag).limit(200)
            )
        ).all()
        sources = (
            await session.scalars(
                select(Customer.source)
                .distinct()
                .where(Customer.source != "")
                .order_by(Customer.source)
                .limit(200)
            )
        ).all()
    return list(tags), list(sources)


def _query_without(params: Mapping[str, str], *drop: str, **extra: str) -> str:
    kept = {k: v for k, v in params.items() if k not in drop and v}
    kept.update({k: v for k, v in extra.items() if v})
    return urlencode(kept)


async def customers_page(request: web.Request) -> web.Response:
    """GET /customers: search, filters, sorting, paging; the first page is rendered here."""
    guard(request, *CUSTOMER_READERS)
    hub = request.app[HUB]
    qs = request.query
    filters = {
        "q": qs.get("q", ""),
        "tag": qs.get("tag", ""),
        "source": qs.get("source", ""),
        "phone": qs.get("phone", ""),
        "email": qs.get("email", ""),
        "sort": qs.get("sort", "name") if qs.get("sort", "name") in svc.SORTS else "name",
        "order": "desc" if qs.get("order") == "desc" else "asc",
    }
    error = ""
    rows: list[dict[str, Any]] = []
    next_cursor = None
    try:
        async with hub.sessions() as session:
            found, next_cursor = await svc.search_customers(
                session,
                region=hub.region,
                q=filters["q"],
                phone=filters["phone"],
                email=filters["email"],
                tag=filters["tag"],
                source=filters["source"],
                sort=filters["sort"],
                descending=filters["order"] == "desc",
                limit=PAGE_SIZE,
                cursor=qs.get("cursor") or None,
            )
            rows = [svc.customer_to_dict(c) for c in found]
    except ValidationError as err:
        error = str(err)
    tags, sources = await _tag_and_source_choices(request)
    return render(
        request,
        "customers.html",
        title="Customers",
        filters=filters,
        rows=rows,
        error=error,
        tags=tags,
        sources=sources,
        paged=bool(qs.get("cursor")),
        first_href="/customers?" + _query_without(filters, "cursor"),
        next_href=("/customers?" + _query_without(filters, "cursor", cursor=next_cursor))
        if next_cursor
        else "",
        page_size=PAGE_SIZE,
    )


def _customer_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise error_page(request, 404, "Not found", "There is no such customer.") from None


async def customer_page(request: web.Request) -> web.Response:
    """GET /customers/{id}: the card, its timeline, edit, notes, messages, click-to-call."""
    user = guard(request, *CUSTOMER_READERS)
    hub = request.app[HUB]
    customer_id = _customer_id(request)
    async with hub.sessions() as session:
        try:
            customer = await svc.get_customer(session, customer_id)
        except NotFound:
            raise error_page(
                request, 404, "Not found", f"Customer {customer_id} does not exist (any more)."
            ) from None
        card = svc.customer_to_dict(customer)
        rows = await timeline(session, customer_id, limit=31)
        reminders = [
            reminder_to_dict(r) for r in await open_reminders(session, customer_id=customer_id)
        ]
        authors = await _usernames(session, {r.user_id for r in rows if r.user_id})
    items = [interaction_to_dict(r) for r in rows[:30]]
    for item in items:
        item["author"] = authors.get(item["user_id"] or 0, "")
    more = f"{rows[29].occurred_at.isoformat()}|{rows[29].id}" if len(rows) > 30 else ""
    return render(
        request,
        "customer.html",
        title=card["name"],
        customer=card,
        items=items,
        more_cursor=more,
        reminders=reminders,
        can_write=has_role(user, *CUSTOMER_READERS),
        can_call=has_role(user, "agent"),
        can_delete=has_role(user, "supervisor"),
        sees_calls=has_role(user, "supervisor"),
    )


async def _usernames(session: Any, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    result = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {uid: name for uid, name in result}


async def customer_new_page(request: web.Request) -> web.Response:
    """GET /customers/new?phone=&email=&name=: the create form, prefilled (e.g. unknown caller)."""
    guard(request, *CUSTOMER_READERS)
    qs = request.query
    return render(
        request,
        "customer_new.html",
        title="New customer",
        prefill={k: qs.get(k, "") for k in ("name", "company", "phone", "email")},
    )


async def merge_page(request: web.Request) -> web.Response:
    """GET /customers/merge?keep=&other=: compare two duplicates and fold one into the other."""
    guard(request, *CUSTOMER_READERS)
    hub = request.app[HUB]
    picked: dict[str, dict[str, Any] | None] = {"keep": None, "other": None}
    async with hub.sessions() as session:
        for key in picked:
            raw = request.query.get(key, "")
            if raw.isdigit():
                try:
                    picked[key] = svc.customer_to_dict(await svc.get_customer(session, int(raw)))
                except NotFound:
                    picked[key] = None
    return render(
        request, "merge.html", title="Merge duplicates", keep=picked["keep"], other=picked["other"]
    )


async def import_page(request: web.Request) -> web.Response:
    """GET /customers/import: upload a CSV/XLSX file and watch the progress bar."""
    guard(request, "marketer", "supervisor")
    return render(request, "import.html", title="Import customers")


async def marketing_page(request: web.Request) -> web.Response:
    """GET /marketing/{segments|templates|campaigns}: the marketer's screens (data via the API)."""
    guard(request, "marketer")
    section = request.match_info["section"]
    titles = {"segments": "Segments", "templates": "Templates", "campaigns": "Campaigns"}
    if section not in titles:
        raise error_page(request, 404, "Not found", "There is no such page.")
    return render(request, f"marketing_{section}.html", title=titles[section])


async def campaign_page(request: web.Request) -> web.Response:
    """GET /marketing/campaigns/{id}: live progress and the report with charts."""
    guard(request, "marketer")
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise error_page(request, 404, "Not found", "There is no such campaign.")
    return render(request, "campaign.html", title="Campaign", campaign_id=int(raw))


async def _staff(request: web.Request) -> list[str]:
    """User names of agents and supervisors (the call log's agent filter)."""
    hub = request.app[HUB]
    async with hub.sessions() as session:
        names = await session.scalars(
            select(User.username)
            .where(User.role.in_(("agent", "supervisor")))
            .order_by(User.username)
        )
        return list(names.all())


async def calls_page(request: web.Request) -> web.Response:
    """GET /supervisor/calls: the call log with filters, paging, CSV export and recordings.

    The first page is rendered here (times in UTC) so the log reads without JavaScript."""
    guard(request, "supervisor")
    hub = request.app[HUB]
    keys = ("from", "to", "agent", "queue", "direction", "status", "customer_id")
    filters = {k: request.query.get(k, "") for k in keys}
    rows: list[dict[str, Any]] = []
    error = ""
    next_cursor = None
    customer_name = ""
    try:
        f = calllog.filter_from_query(filters, calllog.zone("UTC"))
        async with hub.sessions() as session:
            found, next_cursor = await calllog.list_calls(
                session, f, limit=PAGE_SIZE, cursor=request.query.get("cursor") or None
            )
            if f.customer_id is not None:
                customer = await session.get(Customer, f.customer_id)
                customer_name = customer.name if customer else f"#{f.customer_id}"
        rows = [call_to_dict(c, n) for c, n in found]
    except ValidationError as err:
        error = str(err)
    return render(
        request,
        "calls.html",
        title="Call log",
        filters=filters,
        rows=rows,
        error=error,
        agents=await _staff(request),
        dispositions=calllog.DISPOSITIONS,
        directions=calllog.DIRECTIONS,
        customer_name=customer_name,
        csv_href="/api/v1/calls.csv?" + _query_without(filters, "cursor"),
        next_href=("/supervisor/calls?" + _query_without(filters, cursor=next_cursor))
        if next_cursor
        else "",
        page_size=PAGE_SIZE,
    )


async def stats_page(request: web.Request) -> web.Response:
    """GET /supervisor/stats: answered, missed, abandoned, wait and talk per agent and per hour."""
    guard(request, "supervisor")
    return render(
        request,
        "stats.html",
        title="Figures",
        filters={k: request.query.get(k, "") for k in ("from", "to")},
    )


async def wallboard_page(request: web.Request) -> web.Response:
    """GET /supervisor/wallboard: calls in progress and agents' states, live."""
    guard(request, "supervisor")
    return render(request, "wallboard.html", title="Wallboard")


async def audit_page(request: web.Request) -> web.Response:
    """GET /admin/audit: who changed what (supervisors and admins); first page rendered here."""
    guard(request, "supervisor")
    hub = request.app[HUB]
    keys = ("user", "action", "target", "from", "to")
    filters = {k: request.query.get(k, "") for k in keys}
    items: list[dict[str, Any]] = []
    nxt = None
    error = ""
    try:
        async with hub.sessions() as session:
            items, nxt = await query_audit(
                session,
                username=filters["user"],
                action=filters["action"],
                target=filters["target"],
                since=parse_when(filters["from"], "from"),
                until=parse_when(filters["to"], "to", end=True),
                limit=50,
                before_id=int(request.query["cursor"])
                if request.query.get("cursor", "").isdigit()
                else None,
            )
    except ValidationError as err:
        error = str(err)
    return render(
        request,
        "audit.html",
        title="Audit log",
        filters=filters,
        items=items,
        error=error,
        next_href=("/admin/audit?" + _query_without(filters, cursor=str(nxt))) if nxt else "",
        first_href="/admin/audit?" + _query_without(filters),
        paged=bool(request.query.get("cursor")),
    )


def _redirect(target: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound(target)

    handler.__doc__ = f"Redirect to {target}."
    return handler


def setup(app: web.Application) -> None:
    """Register routes."""
    r = app.router
    r.add_get("/", home)
    r.add_get("/marketing", _redirect("/marketing/campaigns"))
    r.add_get("/supervisor", _redirect("/supervisor/wallboard"))
    r.add_get("/admin", _redirect("/admin/audit"))
    r.add_get("/console", console)
    r.add_get("/customers", customers_page)
    r.add_get("/customers/new", customer_new_page)
    r.add_get("/customers/merge", merge_page)
    r.add_get("/customers/import", import_page)
    r.add_get("/customers/{id}", customer_page)
    r.add_get("/marketing/campaigns/{id}", campaign_page)
    r.add_get("/marketing/{section}", marketing_page)
    r.add_get("/supervisor/calls", calls_page)
    r.add_get("/supervisor/stats", stats_page)
    r.add_get("/supervisor/wallboard", wallboard_page)
    r.add_get("/admin/audit", audit_page)
