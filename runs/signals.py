"""Audit logins, logouts and failed logins, whichever page (rtdash's or the admin's) they use."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from runs.core.audit import record


@receiver(user_logged_in, dispatch_uid="rtdash_audit_login")
def audit_login(sender, request, user, **kwargs) -> None:
    record(request, "login", None, actor=user)


@receiver(user_logged_out, dispatch_uid="rtdash_audit_logout")
def audit_logout(sender, request, user, **kwargs) -> None:
    # user is None when the session had already ended.
    if user is not None:
        record(request, "logout", None, actor=user)


@receiver(user_login_failed, dispatch_uid="rtdash_audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Django has already replaced the password in `credentials` with asterisks; only the
    # username is kept, as the account that was tried.
    username = str(credentials.get("username") or "")
    record(request, "login_failed", None, actor_label=username)
