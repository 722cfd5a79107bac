"""What an experiment asks for, checked before anything is recorded or sent.

The API body, the page's form and the management command all become one `Spec` here, so a bad
field gets the same message (naming the field) wherever it came from. Variants are checked
with the run body's own rules (runs.core.validation), so a variant that passes here is a run
the gateway would accept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runs.core.validation import InvalidRequest, check_json_value, loads_strict, validate_run

MAX_CASES = 100
MAX_VARIANTS = 5
MAX_NAME = 200
VARIANT_CONFIG_KEYS = ("maxTokens", "maxTurns", "temperature")


@dataclass
class CaseSpec:
    prompt: str = ""
    messages: list | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class VariantSpec:
    agent: str
    config: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


@dataclass
class Spec:
    name: str
    variants: list[VariantSpec]
    thread: str = ""
    run_ids: list[int] = field(default_factory=list)
    prompts: list[CaseSpec] = field(default_factory=list)


# A run id is a positive bigint: a larger one is no run, and SQLite cannot even take it in
# an `IN (…)` list (Django guards `=` and `<`, not `__in`).
MAX_RUN_ID = 2**63 - 1


def _is_run_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_RUN_ID


def _renamed(problem: InvalidRequest, prefix: str) -> InvalidRequest:
    """The run rules name `config.maxTurns`; here it is `variants[1].config.maxTurns`."""
    message = problem.message
    if message.startswith(problem.field):
        return InvalidRequest(f"{prefix}.{problem.field}", f"{prefix}.{message}")
    return InvalidRequest(f"{prefix}.{problem.field}", f"{prefix}: {message}")


def parse_variant(value: Any, where: str) -> VariantSpec:
    if not isinstance(value, dict):
        raise InvalidRequest(where, f"{where} must be an object with agent, config and metadata.")
    config = value.get("config", {})
    if isinstance(config, dict):
        unknown = sorted(set(config) - set(VARIANT_CONFIG_KEYS))
        if unknown:
            raise InvalidRequest(
                f"{where}.config.{unknown[0]}",
                f"{where}.config.{unknown[0]} is not a config field; use "
                + ", ".join(VARIANT_CONFIG_KEYS)
                + ".",
            )
    body = {"agent": value.get("agent"), "prompt": "x", "config": config}
    body["metadata"] = value.get("metadata", {})
    try:
        checked = validate_run(body, b"")
    except InvalidRequest as problem:
        raise _renamed(problem, where) from None
    return VariantSpec(
        agent=checked.agent.strip(), config=checked.config, metadata=checked.metadata
    )


def _parse_case(value: Any, where: str) -> CaseSpec:
    if isinstance(value, str):
        value = {"prompt": value}
    if not isinstance(value, dict):
        raise InvalidRequest(
            where, f"{where} must be a prompt or an object with prompt or messages."
        )
    body = {"agent": "x", **{k: value[k] for k in ("prompt", "messages", "metadata") if k in value}}
    try:
        checked = validate_run(body, b"")
    except InvalidRequest as problem:
        raise _renamed(problem, where) from None
    return CaseSpec(prompt=checked.prompt, messages=checked.messages, metadata=checked.metadata)


def _parse_source(source: Any) -> tuple[str, list[int], list[CaseSpec]]:
    if not isinstance(source, dict) or len(source) != 1:
        raise InvalidRequest(
            "source", 'source must be one of {"thread": id}, {"runs": [ids]}, {"prompts": [...]}.'
        )
    kind, value = next(iter(source.items()))
    if kind == "thread":
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise InvalidRequest("source.thread", "source.thread must be a thread id (a string).")
        return value.strip(), [], []
    if kind == "runs":
        if not isinstance(value, list) or not value or not all(_is_run_id(v) for v in value):
            raise InvalidRequest(
                "source.runs", "source.runs must be a non-empty list of run ids (whole numbers)."
            )
        if len(value) > MAX_CASES:
            raise InvalidRequest("source.runs", f"source.runs holds at most {MAX_CASES} runs.")
        return "", list(dict.fromkeys(value)), []
    if kind == "prompts":
        if not isinstance(value, list) or not value:
            raise InvalidRequest("source.prompts", "source.prompts must be a non-empty list.")
        if len(value) > MAX_CASES:
            raise InvalidRequest(
                "source.prompts", f"source.prompts holds at most {MAX_CASES} prompts."
            )
        return "", [], [_parse_case(v, f"source.prompts[{i}]") for i, v in enumerate(value)]
    raise InvalidRequest("source", f"source.{kind} is unknown; use thread, runs or prompts.")


def parse_spec(body: Any) -> Spec:
    """The experiment a request body describes; InvalidRequest names the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("body", "The request body must be a JSON object.")
    check_json_value(body, "", root="body")
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        raise InvalidRequest("name", f"name must be a string of at most {MAX_NAME} characters.")
    if "source" not in body:
        raise InvalidRequest("source", "source is required: a thread, runs or prompts.")
    thread, run_ids, prompts = _parse_source(body["source"])
    variants = body.get("variants")
    if not isinstance(variants, list) or not variants:
        raise InvalidRequest("variants", "variants must be a non-empty list.")
    if len(variants) > MAX_VARIANTS:
        raise InvalidRequest("variants", f"At most {MAX_VARIANTS} variants per experiment.")
    parsed = [parse_variant(v, f"variants[{i}]") for i, v in enumerate(variants)]
    return Spec(name=name.strip(), variants=parsed, thread=thread, run_ids=run_ids, prompts=prompts)


def parse_variant_line(line: str, where: str = "variant") -> VariantSpec:
    """`agent=support-chat,maxTurns=4,temperature=0.2` (the form's and the command's syntax);
    any other `key=value` goes into the variant's metadata. A line starting with `{` is a
    JSON variant, for metadata that is more than strings."""
    if line.strip().startswith("{"):
        return parse_variant(loads_strict(line.strip(), where), where)
    raw: dict[str, Any] = {"config": {}, "metadata": {}}
    for item in filter(None, (part.strip() for part in line.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise InvalidRequest(where, f"{where}: '{item}' is not key=value.")
        if key == "agent":
            raw["agent"] = value
        elif key in VARIANT_CONFIG_KEYS:
            try:
                raw["config"][key] = json.loads(value)
            except ValueError:
                raise InvalidRequest(
                    f"{where}.config.{key}", f"{where}.config.{key} must be a number."
                ) from None
        else:
            raw["metadata"][key] = value
    return parse_variant(raw, where)


def parse_prompt_lines(text: str) -> list[Any]:
    """A pasted prompt set: one prompt per line, or JSONL objects with prompt/messages/metadata."""
    cases: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            cases.append(loads_strict(line, f"prompts line {number}"))
        else:
            cases.append(line)
    return cases


def last_user_text(messages: list | None) -> str:
    """The newest user message's text: `content`, or its text `parts` when content is empty."""
    for message in reversed(messages or []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str) and content:
            return content
        parts = content if isinstance(content, list) else message.get("parts")
        texts = [
            part["text"]
            for part in parts or []
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return "".join(texts)
    return ""
