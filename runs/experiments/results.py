"""An experiment as the page and the API read it: case by case, baseline and variants."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from runs.experiments.spec import last_user_text
from runs.models import Experiment, Run, Trial, TrialStatus

PASSED = frozenset({"completed"})


def _cell(prompt: str, run: Run | None, trial: Trial | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {"prompt": prompt, "runId": run.pk if run else None}
    if run is None:
        status = trial.status if trial is not None else "pending"
        if trial is not None and trial.status == TrialStatus.SKIPPED:
            status = "skipped"
        cell.update(
            result="", status=status, inputTokens=None, outputTokens=None,
            cachedInputTokens=None, reasoningTokens=None, cost=None, costStatus=None,
            durationMs=None, firstTokenMs=None,
        )  # fmt: skip
    else:
        cell.update(
            result=run.result, status=run.status, inputTokens=run.input_tokens,
            outputTokens=run.output_tokens, cachedInputTokens=run.cached_input_tokens,
            reasoningTokens=run.reasoning_tokens,
            cost=str(run.cost) if run.cost is not None else None, costStatus=run.cost_status,
            durationMs=run.duration_ms, firstTokenMs=run.first_byte_ms,
        )  # fmt: skip
    if trial is not None and trial.error_code:
        cell["error"] = {"code": trial.error_code, "message": trial.error_message}
    elif run is not None and run.error_code:
        cell["error"] = {"code": run.error_code, "message": run.error_message}
    return cell


def _totals(cells: list[dict]) -> dict[str, Any]:
    def total(name: str) -> int:
        return sum(c[name] or 0 for c in cells)

    costs = [Decimal(c["cost"]) for c in cells if c["cost"] is not None]
    return {
        "cases": len(cells),
        "completed": sum(1 for c in cells if c["status"] in PASSED),
        "failed": sum(1 for c in cells if c["status"] in {"failed", "interrupted", "skipped"}),
        "inputTokens": total("inputTokens"),
        "outputTokens": total("outputTokens"),
        "cost": str(sum(costs)) if costs else None,
        "durationMs": total("durationMs"),
    }


def experiment_data(experiment: Experiment) -> dict[str, Any]:
    """The API's `data`: baseline (from recorded history) and each variant, turn by turn."""
    cases = list(experiment.cases.select_related("baseline_run"))
    trials = (
        Trial.objects.filter(variant__experiment=experiment)
        .select_related("run")
        .order_by("case__position")
    )
    by_variant: dict[int, dict[int, Trial]] = {}
    for trial in trials:
        by_variant.setdefault(trial.variant_id, {})[trial.case_id] = trial
    data: dict[str, Any] = {
        "id": experiment.pk,
        "name": experiment.name,
        "status": experiment.status,
        "source": experiment.source_kind,
        "createdAt": experiment.created_at.isoformat(),
        "url": f"/experiments/{experiment.pk}/",
    }
    if experiment.error_message:
        data["error"] = experiment.error_message
    if any(case.baseline_run_id for case in cases):
        turns = [_cell(_case_prompt(c), c.baseline_run) for c in cases]
        data["baseline"] = {"turns": turns, "totals": _totals(turns)}
    variants = []
    for variant in experiment.variants.all():
        mine = by_variant.get(variant.pk, {})
        turns = [_cell(_case_prompt(c), mine[c.pk].run, mine[c.pk]) for c in cases]
        finished = all(t.status in {TrialStatus.DONE, TrialStatus.SKIPPED} for t in mine.values())
        variants.append(
            {
                "agent": variant.agent,
                "config": variant.config,
                "metadata": variant.metadata,
                "threadId": variant.upstream_thread_id or None,
                "status": "finished" if finished else "running",
                "turns": turns,
                "totals": _totals(turns),
            }
        )
    data["variants"] = variants
    return data


def _case_prompt(case) -> str:
    return case.prompt or last_user_text(case.messages)


@dataclass
class Row:
    """One case on the page: its prompt, the baseline cell and a cell per variant."""

    number: int
    prompt: str
    baseline: dict | None
    cells: list[dict] = field(default_factory=list)


def _compare(cell: dict, reference: dict | None) -> None:
    """Mark what differs from the reference (the baseline, else the first variant)."""
    cell["regressed"] = bool(
        reference
        and reference["status"] in PASSED
        and cell["runId"]
        and cell["status"] not in PASSED
    )
    cell["costChange"] = cell["costChangePercent"] = ""
    cell["costValue"] = Decimal(cell["cost"]) if cell["cost"] is not None else None
    if reference and reference["cost"] is not None and cell["cost"] is not None:
        mine, theirs = Decimal(cell["cost"]), Decimal(reference["cost"])
        cell["costChange"] = "up" if mine > theirs else "down" if mine < theirs else ""
        if theirs and cell["costChange"]:
            cell["costChangePercent"] = f"{(mine - theirs) / theirs * 100:+.1f}%"


def page_rows(data: dict) -> list[Row]:
    baseline = data.get("baseline", {}).get("turns")
    for part in [data.get("baseline"), *data["variants"]]:
        if part is not None:
            cost = part["totals"]["cost"]
            part["totals"]["costValue"] = Decimal(cost) if cost is not None else None
    rows = []
    for index in range(len(data["variants"][0]["turns"]) if data["variants"] else 0):
        reference = baseline[index] if baseline else None
        if reference is not None:
            reference = dict(reference)
            _compare(reference, None)
        row = Row(index + 1, data["variants"][0]["turns"][index]["prompt"], reference)
        for position, variant in enumerate(data["variants"]):
            cell = dict(variant["turns"][index])
            compare_to = reference or (data["variants"][0]["turns"][index] if position else None)
            _compare(cell, compare_to)
            row.cells.append(cell)
        rows.append(row)
    return rows


def regressions(data: dict, cost_up_percent: float | None) -> list[str]:
    """What a CI run should fail on: cases the baseline passed and a variant did not, and a
    variant whose total cost exceeds the baseline's by more than `cost_up_percent`."""
    problems = []
    baseline = data.get("baseline")
    for variant in data["variants"]:
        name = variant["agent"] + (f" {variant['config']}" if variant["config"] else "")
        if baseline:
            for number, (old, new) in enumerate(
                zip(baseline["turns"], variant["turns"], strict=True), 1
            ):
                if old["status"] in PASSED and new["status"] not in PASSED:
                    problems.append(f"{name}: case {number} {new['status']} (baseline passed)")
        if cost_up_percent is not None and baseline and baseline["totals"]["cost"] is not None:
            old_cost = Decimal(baseline["totals"]["cost"])
            new_cost = Decimal(variant["totals"]["cost"] or 0)
            limit = old_cost * (1 + Decimal(str(cost_up_percent)) / 100)
            if new_cost > limit:
                problems.append(
                    f"{name}: cost ${new_cost} is over ${limit:.6f} "
                    f"(baseline ${old_cost} + {cost_up_percent}%)"
                )
    return problems
