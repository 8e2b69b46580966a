"""Templates are refused at save time with part, line and name; rendering is sandboxed and strict."""

from __future__ import annotations

from datetime import date

import pytest

from hub.campaigns.context import message_context
from hub.campaigns.defaults import DEFAULTS, default_parts
from hub.campaigns.schedule import zone
from hub.campaigns.templates import (
    CompiledTemplate,
    OpenFields,
    RenderError,
    TemplateInvalid,
    sample_context,
    validate_template,
)
from hub.errors import ValidationError


def problems(channel: str, **parts: str):
    with pytest.raises(TemplateInvalid) as caught:
        validate_template(channel, parts)
    return caught.value.problems


def test_syntax_error_names_part_and_line():
    found = problems(
        "email", subject="Hi", text="line one\nline two\n{% if customer.name %}\nno end"
    )
    assert found[0].part == "text"
    assert found[0].line is not None and found[0].line >= 3
    assert "syntax error" in found[0].message


def test_unknown_variable_names_it_and_its_line():
    found = problems("sms", text="Hello\n{{ custmer.name }}")
    assert (found[0].part, found[0].line, found[0].name) == ("text", 2, "custmer")


def test_unknown_field_is_found_even_in_a_branch_the_sample_does_not_take():
    found = problems(
        "email", subject="x", html="<p>\n{% if false %}\n{{ customer.nmae }}\n{% endif %}</p>"
    )
    assert (found[0].part, found[0].line, found[0].name) == ("html", 3, "customer.nmae")


def test_unknown_filter_is_refused():
    found = problems("sms", text="{{ customer.name | shout }}")
    assert "shout" in found[0].message


def test_sandbox_refuses_internals_at_save_time():
    found = problems("sms", text="{{ customer.__class__.__mro__ }}")
    assert found  # either the static check or the sandbox refuses it
    found = problems("sms", text="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    assert "not allowed" in found[0].message or "unsafe" in found[0].message.lower()


def test_email_needs_subject_and_a_body():
    assert {p.part for p in problems("email", text="x")} == {"subject"}
    assert {p.part for p in problems("email", subject="x")} == {"text"}
    with pytest.raises(ValidationError):
        validate_template("fax", {"text": "x"})


def test_valid_template_passes_and_renders():
    parts = {
        "subject": "Hello\n{{ customer.first_name }}",
        "html": "<p>{{ customer.name }} {{ customer.custom.level }}</p>",
        "text": "{{ customer.name }} born {{ customer.birthday | date }}",
    }
    validate_template("email", parts)
    rendered = CompiledTemplate("email", parts).render(sample_context())
    assert rendered.subject == "Hello Erika"  # a subject is one line
    assert "01.06.1980" in rendered.text


def test_html_is_autoescaped_and_text_is_not():
    parts = {
        "subject": "{{ customer.name }}",
        "html": "{{ customer.name }}",
        "text": "{{ customer.name }}",
    }
    context = sample_context()
    context["customer"] = {**context["customer"], "name": "<b>Ann & Bob</b>"}
    rendered = CompiledTemplate("email", parts).render(context)
    assert rendered.html == "&lt;b&gt;Ann &amp; Bob&lt;/b&gt;"
    assert rendered.text == "<b>Ann & Bob</b>"
    assert rendered.subject == "<b>Ann & Bob</b>"


def test_missing_custom_field_renders_empty_for_every_customer():
    compiled = CompiledTemplate("sms", {"text": "[{{ customer.custom.vip_level }}]"})
    context = message_context(
        {**sample_context()["customer"], "custom": OpenFields()},
        campaign=None,
        event=None,
        unsubscribe_url="",
        tz=zone("UTC"),
        now=sample_context()["now"],
    )
    assert compiled.render(context).text == "[]"


def test_recipient_data_that_breaks_a_template_is_a_render_error():
    compiled = CompiledTemplate("sms", {"text": "{{ customer.birthday | date }}"})
    context = sample_context()
    context["customer"] = {**context["customer"], "birthday": "not a date"}
    with pytest.raises(RenderError) as caught:
        compiled.render(context)
    assert "text" in str(caught.value)


def test_today_is_in_the_campaign_zone():
    now = sample_context()["now"].replace(hour=23)  # 23:30 UTC
    context = message_context(
        None, campaign=None, event=None, unsubscribe_url="", tz=zone("Asia/Tokyo"), now=now
    )
    assert context["today"] == date(2025, 6, 2)


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_shipped_templates_are_valid(name):
    channel, parts = default_parts(name)
    rendered = CompiledTemplate(channel, parts).render(sample_context())
    assert "Erika" in (rendered.subject + rendered.text)


def test_engine_loads_only_the_fields_a_template_reads():
    from hub.campaigns.templates import customer_fields_used

    assert customer_fields_used({"text": "{{ customer.first_name }} {{ customer['city'] }}"}) == {
        "first_name",
        "city",
    }
    assert customer_fields_used({"text": "{{ campaign.name }}"}) == frozenset()
    # The whole object handed on: everything must be loaded.
    assert customer_fields_used({"text": "{% for k in customer %}{{ k }}{% endfor %}"}) is None


def test_sandbox_holds_at_send_time_too():
    for source in ("{{ ''.__class__.__mro__ }}", "{{ customer.tags.append(1) }}"):
        with pytest.raises(RenderError) as caught:
            CompiledTemplate("sms", {"text": source}).render(sample_context())
        assert "unsafe" in str(caught.value)
    loop = CompiledTemplate("sms", {"text": "{% for i in range(3) %}{{ i }}{% endfor %}"})
    assert loop.render(sample_context()).text == "012"  # Jinja's globals stay available
