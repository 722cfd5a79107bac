"""The new-experiment form: a source (thread, runs or pasted prompts) and variants, one a line."""

from __future__ import annotations

from django import forms

from runs.core.validation import InvalidRequest
from runs.experiments.spec import (
    MAX_VARIANTS,
    Spec,
    parse_prompt_lines,
    parse_spec,
    parse_variant_line,
)

# Which form field shows the error for a spec field.
_FIELD_FOR = {"name": "name", "source": "prompts", "variants": "variants"}


class ExperimentForm(forms.Form):
    name = forms.CharField(max_length=200, required=False)
    thread = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
    runs = forms.CharField(max_length=2000, required=False, widget=forms.HiddenInput)
    prompts = forms.CharField(
        required=False,
        max_length=200_000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="One prompt a line, or JSONL objects with prompt or messages and metadata.",
    )
    variants = forms.CharField(
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=(
            f"One variant a line, at most {MAX_VARIANTS}: agent=code-assistant,maxTurns=4,"
            "temperature=0.2,maxTokens=2048 (other key=value pairs become metadata), or a JSON "
            'object: {"agent": ..., "config": {...}, "metadata": {...}}.'
        ),
    )

    def spec(self) -> Spec | None:
        """The checked experiment, or None with the problem added to the form."""
        data = self.cleaned_data
        try:
            variants = [
                parse_variant_line(line, f"variant line {number}")
                for number, line in enumerate(data["variants"].splitlines(), start=1)
                if line.strip()
            ]
            spec = parse_spec(
                {
                    "name": data["name"],
                    "source": self._source(),
                    "variants": [vars(variant) for variant in variants],
                }
            )
        except InvalidRequest as problem:
            field = problem.field.split(".")[0].split("[")[0]
            self.add_error(_FIELD_FOR.get(field, "variants"), problem.message)
            return None
        return spec

    def _source(self) -> dict:
        data = self.cleaned_data
        if data["thread"]:
            return {"thread": data["thread"]}
        if data["runs"]:
            ids = [part.strip() for part in data["runs"].split(",") if part.strip()]
            if not all(part.isascii() and part.isdigit() and len(part) < 19 for part in ids):
                raise InvalidRequest("source.runs", "The selected runs are not run ids.")
            return {"runs": [int(part) for part in ids]}
        return {"prompts": parse_prompt_lines(data["prompts"])}
