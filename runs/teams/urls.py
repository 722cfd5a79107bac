"""Logging in and out, choosing a team, and team settings (members, keys, tokens, audit)."""

from __future__ import annotations

from django.urls import path

from runs.teams import views as team_views

urlpatterns = [
    path("login/", team_views.login, name="login"),
    path("logout/", team_views.logout, name="logout"),
    path("teams/", team_views.team_switch, name="team_switch"),
    path("settings/", team_views.team_settings, name="team_settings"),
    path("settings/members/", team_views.member_add, name="member_add"),
    path("settings/members/<int:membership_id>/role/", team_views.member_role, name="member_role"),
    path(
        "settings/members/<int:membership_id>/remove/",
        team_views.member_remove,
        name="member_remove",
    ),
    path("settings/keys/", team_views.key_add, name="key_add"),
    path("settings/keys/<int:key_id>/test/", team_views.key_test, name="key_test"),
    path("settings/keys/<int:key_id>/default/", team_views.key_default, name="key_default"),
    path("settings/keys/<int:key_id>/revoke/", team_views.key_revoke, name="key_revoke"),
    path("settings/tokens/", team_views.token_add, name="token_add"),
    path("settings/tokens/<int:token_id>/revoke/", team_views.token_revoke, name="token_revoke"),
    path("settings/timezone/", team_views.team_timezone, name="team_timezone"),
    path("settings/audit/", team_views.team_audit, name="team_audit"),
]
