"""The playground form: its fields, and the /v1/run request it describes.

`build_run_request` reads the form (a POST, or the run socket's start message) and checks the
body with `runs.core.validation.validate_run`, exactly as the gateway checks a body; what fails
comes back as `InvalidRun`, its messages placed on the form's fields."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.datastructures import MultiValueDict

from runs.core.validation import (
    MAX_TOKENS_RANGE,
    MAX_TURNS_RANGE,
    TEMPERATURE_RANGE,
    HostileJSON,
    InvalidRequest,
    RunRequest,
    check_json_value,
    loads_strict,
    validate_run,
)

MESSAGE_ROLES = ("user", "assistant", "system")

# Where validate_run's field names show up in the form.
FORM_FIELDS = {
    "agent": "agent",
    "prompt": "prompt",
    "threadId": "thread",
    "stream": "stream",
    "config.maxTokens": "max_tokens",
    "config.maxTurns": "max_turns",
    "config.temperature": "temperature",
    "metadata": "metadata",
}


class InvalidRun(Exception):
    """The playground form cannot become a run request; `errors` maps field → messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(message for messages in errors.values() for message in messages))
        self.errors = errors


def _range_help(low, high) -> str:
    return f"{low:,g} to {high:,g}"


class PlaygroundForm(forms.Form):
    agent = forms.CharField(label="Agent", max_length=200)
    input_mode = forms.ChoiceField(
        label="Send",
        choices=[("prompt", "Single turn"), ("messages", "Message history")],
        required=False,
        initial="prompt",
    )
    prompt = forms.CharField(label="Prompt", required=False, strip=False)
    # Read from the message_role/message_content and meta_key/meta_value rows in clean();
    # declared so their errors have a place.
    messages = forms.Field(label="Messages", required=False)
    metadata = forms.Field(label="Metadata", required=False)
    thread = forms.CharField(label="Thread", required=False, max_length=200)
    max_tokens = forms.IntegerField(
        label="Max tokens",
        required=False,
        min_value=MAX_TOKENS_RANGE[0],
        max_value=MAX_TOKENS_RANGE[1],
        help_text=_range_help(*MAX_TOKENS_RANGE),
    )
    max_turns = forms.IntegerField(
        label="Max turns",
        required=False,
        min_value=MAX_TURNS_RANGE[0],
        max_value=MAX_TURNS_RANGE[1],
        help_text=f"{MAX_TURNS_RANGE[0]} or more",  # RunTools states no upper bound
    )
    temperature = forms.FloatField(
        label="Temperature",
        required=False,
        min_value=TEMPERATURE_RANGE[0],
        max_value=TEMPERATURE_RANGE[1],
        help_text=_range_help(*TEMPERATURE_RANGE),
    )
    stream = forms.BooleanField(label="Stream", required=False, initial=True)

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("input_mode") == "messages":
            cleaned["messages"] = self._clean_messages()
        else:
            cleaned["input_mode"] = "prompt"
            cleaned["messages"] = None
            if not (cleaned.get("prompt") or "").strip() and "prompt" not in self.errors:
                self.add_error("prompt", "Write a prompt.")
        cleaned["metadata"] = self._clean_metadata()
        return cleaned

    def _rows(self, *names: str) -> list[tuple[str, ...]]:
        columns = [self.data.getlist(name) for name in names]
        return list(zip(*columns, strict=False))

    def _clean_messages(self) -> list[dict]:
        messages = []
        for role, content in self._rows("message_role", "message_content"):
            if not content.strip():
                continue
            if role not in MESSAGE_ROLES:
                self.add_error("messages", f"A message's role must be one of {MESSAGE_ROLES}.")
                continue
            messages.append({"role": role, "content": content})
        if not messages and "messages" not in self.errors:
            self.add_error("messages", "Add at least one message with some text.")
        return messages

    def _clean_metadata(self) -> dict:
        metadata: dict[str, Any] = {}
        for key, value in self._rows("meta_key", "meta_value"):
            key = key.strip()
            if not key and not value.strip():
                continue
            if not key:
                self.add_error("metadata", f"The metadata value {value[:40]!r} needs a key.")
                continue
            if key in metadata:
                self.add_error("metadata", f"The metadata key {key!r} appears twice.")
                continue
            try:
                metadata[key] = _metadata_value(value)
            except HostileJSON as problem:
                self.add_error("metadata", f"The value of {key[:40]!r}: {problem.message}")
        return metadata

    def body(self) -> dict:
        """The /v1/run body this form describes (after is_valid())."""
        data = self.cleaned_data
        body: dict[str, Any] = {"agent": data["agent"].strip()}
        if data["input_mode"] == "messages":
            body["messages"] = data["messages"]
        else:
            body["prompt"] = data["prompt"]
        if data.get("thread"):
            body["threadId"] = data["thread"].strip()
        body["stream"] = bool(data.get("stream"))
        config = {
            name: data[field]
            for name, field in (
                ("maxTokens", "max_tokens"),
                ("maxTurns", "max_turns"),
                ("temperature", "temperature"),
            )
            if data.get(field) is not None
        }
        if config:
            body["config"] = config
        if data["metadata"]:
            body["metadata"] = data["metadata"]
        return body


def _metadata_value(text: str) -> Any:
    """A value that reads as JSON is sent as JSON (objects, numbers, true); else as text.

    Raises HostileJSON for what looks like JSON but is refused (NaN, Infinity, 1e999, nesting
    past MAX_JSON_DEPTH): sent as text, it would not be what the person meant.
    """
    try:
        return loads_strict(text, "metadata")
    except HostileJSON:
        raise
    except InvalidRequest:
        return text


def _form_errors(form: forms.Form) -> dict[str, list[str]]:
    return {
        field: [str(message) for message in messages] for field, messages in form.errors.items()
    }


def build_run_request(data: MultiValueDict) -> tuple[RunRequest, dict]:
    """Read the playground form into a validated RunRequest and its body. Raises InvalidRun."""
    form = PlaygroundForm(data)
    if not form.is_valid():
        raise InvalidRun(_form_errors(form))
    body = form.body()
    try:
        # What the gateway's parser checks in a body, checked in the one built here (a form
        # sent over the run socket can carry lone surrogates in any field).
        check_json_value(body, "", root="body")
        raw = json.dumps(body, separators=(",", ":")).encode()
        run_request = validate_run(body, raw)
    except InvalidRequest as problem:
        field = FORM_FIELDS.get(problem.field)
        if field is None:
            # A nested path (`metadata.k`, `messages[0].content`): the form field it is in.
            top = problem.field.replace("[", ".").split(".")[0]
            field = FORM_FIELDS.get(top, "messages" if top == "messages" else None)
        raise InvalidRun({field or "__all__": [problem.message]}) from None
    return run_request, body
