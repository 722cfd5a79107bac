"""The Django admin, for the operator. It never shows a key's ciphertext or a token's hash.

Keys and tokens are created from team settings or `manage.py team`, not here: a key needs
encrypting and a token's plaintext must be shown exactly once, which the admin cannot do.
The audit log is read-only, as it is everywhere.
"""

from __future__ import annotations

from django.contrib import admin

from runs.models import (
    AuditEvent,
    DailyUsage,
    GatewayToken,
    Membership,
    Run,
    RunEvent,
    RunToolsKey,
    Team,
    Thread,
)
from runs.teams.forms import AdminLoginForm

# The admin's login page is throttled exactly like rtdash's own.
admin.site.login_form = AdminLoginForm
admin.site.site_header = "rtdash administration"
admin.site.site_title = "rtdash admin"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__slug"]
    raw_id_fields = ["user", "team"]


@admin.register(RunToolsKey)
class RunToolsKeyAdmin(admin.ModelAdmin):
    list_display = ["label", "team", "masked", "is_default", "created_at", "revoked_at"]
    list_filter = ["is_default", "team"]
    search_fields = ["label", "team__slug"]
    # Never the ciphertext: it is one leaked encryption key away from the plaintext.
    exclude = ["ciphertext"]
    fields = [
        "team",
        "label",
        "masked",
        "is_default",
        "created_by",
        "created_at",
        "revoked_at",
        "last_tested_at",
        "last_test_ok",
    ]
    # Default and revocation have rules (one default per team, revoking forgets the key)
    # that live on the model and in team settings; only the label is edited here.
    readonly_fields = [f for f in fields if f != "label"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(GatewayToken)
class GatewayTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "prefix", "created_at", "last_used_at", "expires_at"]
    list_filter = ["team"]
    search_fields = ["name", "prefix", "team__slug"]
    exclude = ["token_hash"]
    fields = [
        "team",
        "name",
        "prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
        "requests_per_minute",
    ]
    # Revocation is final (and audited from team settings), so it is not undone here.
    readonly_fields = ["team", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor_label", "action", "target", "team", "ip"]
    list_filter = ["action", "team"]
    search_fields = ["actor_label", "action", "target"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ["upstream_id", "team", "agent", "title", "turns", "last_activity_at"]
    list_filter = ["team", "archived"]
    search_fields = ["upstream_id", "title", "agent"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "agent", "source", "status", "started_at", "cost"]
    list_filter = ["status", "source", "team"]
    search_fields = ["agent", "upstream_run_id", "upstream_thread_id"]
    raw_id_fields = ["team", "token", "user", "thread"]
    date_hierarchy = "started_at"
    # Counting every run for the paginator is the slow part of a large changelist.
    show_full_result_count = False


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ["run", "sequence", "event", "created_at"]
    raw_id_fields = ["run"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DailyUsage)
class DailyUsageAdmin(admin.ModelAdmin):
    list_display = ["team", "day", "agent", "source", "runs", "cost"]
    list_filter = ["team", "source"]
    raw_id_fields = ["team", "user", "token"]
