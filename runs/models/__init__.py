"""rtdash's data: teams and their secrets, every run with what it streamed and cost, the rollups
reports read, and prices and budgets. One Django app (`runs`); its models live in the modules
below and are imported from here."""

from __future__ import annotations

from runs.models.billing import (
    PRICE_DIGITS,
    Budget,
    BudgetAlert,
    Price,
)
from runs.models.experiments import (
    Case,
    Experiment,
    ExperimentStatus,
    SourceKind,
    Trial,
    TrialStatus,
    Variant,
)
from runs.models.operations import (
    AlertAttempt,
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRule,
    DestinationKind,
)
from runs.models.runs import (
    FINISHED_STATUSES,
    CostStatus,
    Run,
    RunEvent,
    RunStatus,
    Source,
    Thread,
)
from runs.models.teams import (
    TOKEN_PREFIX,
    AuditEvent,
    GatewayToken,
    LastOwnerError,
    Membership,
    Role,
    RunToolsKey,
    Team,
    hash_token,
)
from runs.models.usage import (
    DailyRunStats,
    DailyUsage,
    ThreadUsage,
    ThreadUsageSync,
    usage_dimensions,
)

__all__ = [
    "FINISHED_STATUSES",
    "PRICE_DIGITS",
    "TOKEN_PREFIX",
    "AlertAttempt",
    "AlertDelivery",
    "AlertDestination",
    "AlertEvent",
    "AlertKind",
    "AlertRule",
    "AuditEvent",
    "Budget",
    "BudgetAlert",
    "Case",
    "CostStatus",
    "DailyRunStats",
    "DailyUsage",
    "DestinationKind",
    "Experiment",
    "ExperimentStatus",
    "GatewayToken",
    "LastOwnerError",
    "Membership",
    "Price",
    "Role",
    "Run",
    "RunEvent",
    "RunStatus",
    "RunToolsKey",
    "Source",
    "SourceKind",
    "Team",
    "Thread",
    "ThreadUsage",
    "ThreadUsageSync",
    "Trial",
    "TrialStatus",
    "Variant",
    "hash_token",
    "usage_dimensions",
]
