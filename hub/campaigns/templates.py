"""Message templates: sandboxed Jinja2 with strict undefined names, checked when saved.

A template is refused at save time, with the part, line and name, when it has a syntax error, an
unknown filter or test, a variable that is not part of the context, an attribute the context
objects do not have, or when it fails to render against a complete sample context. HTML parts are
autoescaped; subject, text and SMS parts are not (they are not HTML)."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from hub.errors import ValidationError

CHANNEL_PARTS = {"email": ("subject", "html", "text"), "sms": ("text",)}
SUBJECT_MAX = 250
SMS_MAX = 1600  # ten concatenated segments

CUSTOMER_FIELDS = (
    "id",
    "name",
    "first_name",
    "last_name",
    "company",
    "source",
    "city",
    "region",
    "birthday",
    "email",
    "phone",
    "tags",
    "custom",
    "created_at",
)
CAMPAIGN_FIELDS = ("id", "name")
# Top-level names a template may use; `event` carries trigger data (empty for campaigns).
CONTEXT_NAMES = ("customer", "campaign", "event", "unsubscribe_url", "today", "now")
_OBJECT_FIELDS = {"customer": CUSTOMER_FIELDS, "campaign": CAMPAIGN_FIELDS}
_TEMPLATE_FILE = "<template>"


class OpenFields(dict[str, Any]):
    """Custom fields and event data: a key a customer lacks renders as an empty string, so a
    template using `customer.custom.vip_level` works for every customer, not only some."""

    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class TemplateProblem:
    """One reason a template was refused."""

    part: str
    line: int | None
    message: str
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON shape for the API."""
        return {"part": self.part, "line": self.line, "name": self.name, "message": self.message}


class TemplateInvalid(ValidationError):
    """A template was refused; `problems` says where and why."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        first = problems[0]
        where = f"{first.part}" + (f" line {first.line}" if first.line else "")
        super().__init__(f"{where}: {first.message}", field=first.part)
        self.problems = problems


@dataclass(frozen=True)
class Rendered:
    """A rendered message; `text` is the SMS body for SMS."""

    subject: str = ""
    html: str = ""
    text: str = ""


def _environment(autoescape: bool) -> SandboxedEnvironment:
    # Immutable: a template cannot change the lists and dicts it is given (they are shared).
    env = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=autoescape,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Templates format dates for people; no other helpers are exposed.
    env.filters["date"] = _format_date
    return env


def _format_date(value: Any, fmt: str = "%d.%m.%Y") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (date, datetime)):
        return value.strftime(fmt)
    raise TypeError("the date filter needs a date")


TEXT_ENV = _environment(autoescape=False)
HTML_ENV = _environment(autoescape=True)
_ALLOWED = frozenset(CONTEXT_NAMES) | frozenset(TEXT_ENV.globals)


def _env_for(part: str) -> SandboxedEnvironment:
    return HTML_ENV if part == "html" else TEXT_ENV


def sample_context() -> dict[str, Any]:
    """A context with every field filled in, used to test-render templates at save time."""
    now = datetime(2025, 6, 1, 9, 30, tzinfo=UTC)
    return {
        "customer": {
            "id": 1,
            "name": "Erika Mustermann",
            "first_name": "Erika",
            "last_name": "Mustermann",
            "company": "Example GmbH",
            "source": "website",
            "city": "Berlin",
            "region": "Berlin",
            "birthday": date(1980, 6, 1),
            "email": "erika@example.test",
            "phone": "+4915112345678",
            "tags": ["vip"],
            "custom": OpenFields({"customer_number": "K-1001"}),
            "created_at": now,
        },
        "campaign": {"id": 1, "name": "Sample campaign"},
        "event": OpenFields({"type": "sample", "caller": "+4915112345678", "occurred_at": now}),
        "unsubscribe_url": "https://example.test/u/sample-token",
        "today": now.date(),
        "now": now,
    }


def _walk(node: nodes.Node) -> Iterator[nodes.Node]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _line_of_name(ast: nodes.Template, name: str) -> int | None:
    for node in _walk(ast):
        if isinstance(node, nodes.Name) and node.name == name and node.ctx == "load":
            return int(node.lineno)
    return None


def _check_attributes(part: str, ast: nodes.Template) -> list[TemplateProblem]:
    """`customer.nmae` is refused even inside a branch the sample render does not take."""
    problems: list[TemplateProblem] = []
    for node in _walk(ast):
        attr: str | None = None
        target: nodes.Node | None = None
        if isinstance(node, nodes.Getattr):
            attr, target = node.attr, node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            attr, target = node.arg.value, node.node
        if attr is None or not isinstance(target, nodes.Name):
            continue
        allowed = _OBJECT_FIELDS.get(target.name)
        if allowed is not None and attr not in allowed:
            problems.append(
                TemplateProblem(
                    part,
                    int(node.lineno),
                    f"{target.name} has no field {attr!r}; known: {', '.join(allowed)}",
                    name=f"{target.name}.{attr}",
                )
            )
    return problems


def _render_line(err: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == _TEMPLATE_FILE:
            line = frame.lineno
    return line


def check_part(part: str, source: str) -> list[TemplateProblem]:
    """Every problem of one template part (empty list: fine)."""
    env = _env_for(part)
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as err:
        return [TemplateProblem(part, err.lineno, f"syntax error: {err.message}")]
    try:
        declared = meta.find_undeclared_variables(ast)
    except jinja2.TemplateSyntaxError as err:  # unknown filter or test: found when compiling
        return [TemplateProblem(part, err.lineno, f"syntax error: {err.message}")]
    unknown = sorted(declared - _ALLOWED)
    problems = [
        TemplateProblem(
            part,
            _line_of_name(ast, name),
            f"unknown variable {name!r}; known: {', '.join(CONTEXT_NAMES)}",
            name=name,
        )
        for name in unknown
    ]
    problems.extend(_check_attributes(part, ast))
    if problems:
        return problems
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as err:  # unknown filter or test: found when compiling
        return [TemplateProblem(part, err.lineno, f"syntax error: {err.message}")]
    try:
        template.render(sample_context())
    except jinja2.UndefinedError as err:
        return [TemplateProblem(part, _render_line(err), f"undefined: {err.message}")]
    except SecurityError as err:
        return [TemplateProblem(part, _render_line(err), f"not allowed: {err}")]
    except Exception as err:  # a template error of any kind must be reported, not crash the save
        return [TemplateProblem(part, _render_line(err), f"{type(err).__name__}: {err}")]
    return []


def validate_template(channel: str, parts: Mapping[str, str]) -> None:
    """Refuse a template (TemplateInvalid) unless every part of its channel is sound."""
    if channel not in CHANNEL_PARTS:
        raise ValidationError("channel must be email or sms", field="channel")
    problems: list[TemplateProblem] = []
    for part in CHANNEL_PARTS[channel]:
        source = parts.get(part) or ""
        if not isinstance(source, str):
            problems.append(TemplateProblem(part, None, "must be text"))
            continue
        problems.extend(check_part(part, source))
    if channel == "email":
        if not (parts.get("subject") or "").strip():
            problems.append(TemplateProblem("subject", None, "an email needs a subject"))
        if not (parts.get("html") or "").strip() and not (parts.get("text") or "").strip():
            problems.append(TemplateProblem("text", None, "an email needs an HTML or a text part"))
    elif not (parts.get("text") or "").strip():
        problems.append(TemplateProblem("text", None, "an SMS needs text"))
    if problems:
        raise TemplateInvalid(problems)


def customer_fields_used(sources: Mapping[str, str]) -> frozenset[str] | None:
    """Which customer fields the template parts read (None: the whole customer object is used,
    e.g. passed to a loop), so the engine loads only those for each batch."""
    used: set[str] = set()
    for part, source in sources.items():
        if not source:
            continue
        ast = _env_for(part).parse(source)
        attribute_nodes = set()
        for node in _walk(ast):
            attr = None
            if isinstance(node, nodes.Getattr):
                attr = node.attr
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
                attr = node.arg.value if isinstance(node.arg.value, str) else None
            target = getattr(node, "node", None)
            if attr is not None and isinstance(target, nodes.Name) and target.name == "customer":
                used.add(attr)
                attribute_nodes.add(id(target))
        for node in _walk(ast):
            if (
                isinstance(node, nodes.Name)
                and node.name == "customer"
                and id(node) not in attribute_nodes
            ):
                return None
    return frozenset(used)


class CompiledTemplate:
    """A validated template compiled once and rendered per recipient."""

    def __init__(self, channel: str, parts: Mapping[str, str]) -> None:
        self.channel = channel
        sources = {part: parts.get(part) or "" for part in CHANNEL_PARTS[channel]}
        self._parts = {
            part: _env_for(part).from_string(source) for part, source in sources.items() if source
        }
        self.customer_fields = customer_fields_used(sources)

    def render(self, context: Mapping[str, Any]) -> Rendered:
        """Render every part; raises RenderError (with the part) when a recipient's data breaks it."""
        out: dict[str, str] = {}
        # One namespace for all parts, handed to Jinja without the per-part copy that
        # Template.render makes: this halves the cost of rendering a campaign message.
        names = {**TEXT_ENV.globals, **context}
        for part, template in self._parts.items():
            try:
                out[part] = template.environment.concat(  # type: ignore[attr-defined]
                    template.root_render_func(template.new_context(names, shared=True))
                )
            except Exception:
                # Render again the usual way: Jinja then points its traceback at the line.
                try:
                    out[part] = template.render(context)
                except Exception as err:  # wrapped: this delivery fails, not the run
                    line = _render_line(err)
                    where = f"{part}" + (f" line {line}" if line else "")
                    raise RenderError(f"{where}: {type(err).__name__}: {err}") from err
        subject = " ".join(out.get("subject", "").split())[:SUBJECT_MAX]
        text = out.get("text", "")
        if self.channel == "sms":
            text = text.strip()[:SMS_MAX]
        return Rendered(subject=subject, html=out.get("html", ""), text=text)


class RenderError(ValidationError):
    """A template could not be rendered for one recipient."""
