"""The run-now form read into the engine's request, and the engine's refusal put back on it."""

from __future__ import annotations

import pytest

from maintd.admin_api.console.interface import ParamField, RunOptions
from maintd.admin_api.console.run_now import RunNowForm, shown
from maintd.admin_api.interface import ParamsRefused, Unprocessable

pytestmark = pytest.mark.unit

OPTIONS = RunOptions(
    (
        ParamField("batch_size", 1000, overridable=True, text_only=False),
        ParamField("label", "nightly", overridable=True, text_only=True),
        ParamField("table", "sessions", overridable=False, text_only=True),
        ParamField("code", "007", overridable=True, text_only=True),
    ),
    dry_run=True,
    require_reason=False,
)


def test_the_form_starts_from_the_configured_params() -> None:
    assert RunNowForm.configured(OPTIONS).typed == {
        "batch_size": "1000",
        "label": "nightly",
        "table": "sessions",
        "code": "007",
    }


def test_only_the_params_typed_otherwise_are_overrides() -> None:
    typed = RunNowForm.configured(OPTIONS).typed
    form = RunNowForm.read({f"param.{name}": text for name, text in typed.items()} | {"reason": " "}, OPTIONS)
    request = form.request(OPTIONS)
    assert (request.params, request.reason, request.dry_run) == ({}, None, False)


def test_a_json_param_reads_json_and_a_text_param_reads_text() -> None:
    form = RunNowForm.read(
        {"param.batch_size": "500", "param.label": "42", "reason": " ticket 7 ", "dry_run": "true"}, OPTIONS
    )
    request = form.request(OPTIONS)
    assert request.params == {"batch_size": 500, "label": "42"}
    assert (request.reason, request.dry_run) == ("ticket 7", True)
    # What is not JSON stays the text typed, for the task's model to accept ("auto") or refuse.
    assert RunNowForm.read({"param.batch_size": "auto"}, OPTIONS).request(OPTIONS).params == {"batch_size": "auto"}


def test_a_param_the_form_does_not_offer_is_sent_for_the_engine_to_refuse() -> None:
    form = RunNowForm.read({"param.table": "users"}, OPTIONS)
    assert form.request(OPTIONS).params == {"table": "users"}


def test_a_reason_too_long_is_refused_naming_the_field() -> None:
    form = RunNowForm.read({"reason": "x" * 501}, OPTIONS)
    with pytest.raises(Unprocessable) as refused:
        form.request(OPTIONS)
    assert refused.value.errors[0]["loc"] == ["body", "reason"]
    assert refused.value.errors[0]["msg"].startswith("reason: ")


def test_the_engines_messages_go_on_their_fields_and_the_text_typed_stays() -> None:
    form = RunNowForm.read({"param.batch_size": "lots", "reason": "why"}, OPTIONS)
    refused = form.refused(ParamsRefused("j", [(("batch_size",), "Input should be a valid integer", "int_parsing")]))
    assert refused.errors == {"params.batch_size": ["params.batch_size: Input should be a valid integer"]}
    assert (refused.typed["batch_size"], refused.reason) == ("lots", "why")


@pytest.mark.parametrize(("value", "text"), [(1000, "1000"), ("auto", "auto"), ("500", '"500"'), (None, "null")])
def test_a_value_is_shown_so_that_it_reads_back_as_itself(value: object, text: str) -> None:
    assert shown(value) == text


def test_each_rendering_of_the_form_has_a_key_of_its_own_which_a_refusal_keeps() -> None:
    first, second = RunNowForm.configured(OPTIONS), RunNowForm.configured(OPTIONS)
    assert first.key and second.key and first.key != second.key
    posted = RunNowForm.read({"key": first.key, "param.batch_size": "x"}, OPTIONS)
    assert posted.refused(Unprocessable([{"loc": ["body", "reason"], "msg": "m", "type": "t"}])).key == first.key
    # What the API would refuse as a key is not sent.
    assert RunNowForm.read({"key": "é" * 3}, OPTIONS).key is None
    assert RunNowForm.read({"key": "k" * 201}, OPTIONS).key is None
