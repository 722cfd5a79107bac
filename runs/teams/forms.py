"""Forms for logging in and for team settings. None of them ever renders a secret back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils import timezone

from runs.core import audit, ratelimit
from runs.core.days import day_field, timezone_names
from runs.models import Membership, Role, Team

THROTTLED_MESSAGE = (
    "Too many failed login attempts for this username from your address. "
    "Wait 15 minutes and try again."
)


class _ThrottledLoginMixin:
    """Refuse a username+address pair after too many failures, before checking the password.

    Shared by rtdash's login page and the admin's, so neither is a way around the other.
    """

    throttled = False

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        if not username or not self.cleaned_data.get("password"):
            return super().clean()  # a missing field: no password is checked
        attempts = ratelimit.login_attempts(audit.client_ip(self.request), username)
        # Every attempt is counted before its password is checked (atomically, in the cache):
        # checking the count first and counting failures after let a parallel burst through.
        if not attempts.admit():
            self.throttled = True
            audit.record(
                self.request,
                "login_throttled",
                None,
                actor_label=username,
                target=f"after {attempts.limit} failures",
            )
            raise ValidationError(THROTTLED_MESSAGE, code="throttled")
        # A failure keeps its count (failed logins are audited by the user_login_failed
        # signal); a success clears the count.
        cleaned = super().clean()
        attempts.reset()
        return cleaned


class LoginForm(_ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(_ThrottledLoginMixin, AdminAuthenticationForm):
    pass


def _role_choices(roles: list[Role]) -> list[tuple[str, str]]:
    return [(role.value, role.label) for role in roles]


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=())

    def __init__(self, *args, team: Team, roles: list[Role], **kwargs) -> None:
        # Unique ids: the settings page shows several forms at once.
        kwargs.setdefault("auto_id", "member_%s")
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["role"].choices = _role_choices(roles)
        self.fields["role"].initial = Role.MEMBER

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        # Only existing accounts can be added: rtdash does not send invitations.
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise ValidationError("There is no active user with that username.")
        if Membership.objects.filter(team=self.team, user=user).exists():
            raise ValidationError(f"{username} is already a member of this team.")
        self.user = user
        return username


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=())

    def __init__(self, *args, roles: list[Role], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = _role_choices(roles)


class KeyForm(forms.Form):
    label = forms.CharField(max_length=100, initial="default")
    # Write-only: PasswordInput never renders a value back, not even after a form error.
    key = forms.CharField(
        label="RunTools API key",
        min_length=12,
        max_length=500,
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}
        ),
    )
    make_default = forms.BooleanField(
        required=False, label="Use it for this team's runs (make it the default)"
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "key_%s")
        super().__init__(*args, **kwargs)

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        # A pasted key with a space or a line break in it would fail upstream in a way that
        # is hard to see; say so here, without echoing any of it.
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            raise ValidationError("A RunTools key has no spaces or unusual characters.")
        return key


EXPIRY_CHOICES = [
    ("", "Never"),
    ("7", "In 7 days"),
    ("30", "In 30 days"),
    ("90", "In 90 days"),
    ("365", "In a year"),
]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “nightly CI”.")
    expires_in = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False, label="Expires"
    )
    requests_per_minute = forms.IntegerField(
        min_value=1,
        max_value=100_000,
        required=False,
        label="Requests per minute",
        help_text="Leave empty for no limit.",
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "token_%s")
        super().__init__(*args, **kwargs)

    def expires_at(self) -> datetime | None:
        days = self.cleaned_data.get("expires_in")
        return timezone.now() + timedelta(days=days) if days else None


class AuditFilterForm(forms.Form):
    """The audit log's filters, from the query string: what was done, by whom, on which days
    (UTC). A value that does not fit is a form error and that filter is not applied."""

    action = forms.ChoiceField(label="Action", required=False)
    actor = forms.CharField(label="Who", required=False, max_length=150)
    since = day_field(label="From (UTC)", required=False, widget=forms.DateInput({"type": "date"}))
    until = day_field(label="To (UTC)", required=False, widget=forms.DateInput({"type": "date"}))

    def __init__(self, *args, actors: list[str], **kwargs) -> None:
        kwargs.setdefault("auto_id", "audit_%s")
        super().__init__(*args, **kwargs)
        self.fields["action"].choices = [
            ("", "Any action"),
            *sorted(audit.ACTIONS.items(), key=lambda item: item[1]),
        ]
        self.fields["actor"].widget.attrs["list"] = "audit-actors"
        self.actors = actors

    def clean_actor(self) -> str:
        return self.cleaned_data["actor"].strip()

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The end is before the start.")
        return cleaned

    def apply(self, events):
        """`events` narrowed by every filter that is valid (all of them when the form is)."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        if data.get("action"):
            events = events.filter(action=data["action"])
        if data.get("actor"):
            events = events.filter(actor_label__iexact=data["actor"])
        if data.get("since"):
            start = datetime.combine(data["since"], datetime.min.time(), tzinfo=UTC)
            events = events.filter(created_at__gte=start)
        if data.get("until") and "until" not in self.errors:
            end = datetime.combine(data["until"], datetime.min.time(), tzinfo=UTC)
            events = events.filter(created_at__lt=end + timedelta(days=1))
        return events

    def query_string(self) -> str:
        """The valid filters as a query string, for the "older events" link."""
        data = getattr(self, "cleaned_data", {})
        pairs = {
            name: (value.isoformat() if hasattr(value, "isoformat") else value)
            for name, value in data.items()
            if value and name not in self.errors
        }
        return urlencode(pairs)

    @property
    def active(self) -> bool:
        return bool(self.query_string())


class TimezoneForm(forms.Form):
    """The team's time zone, chosen from the tz database's names (nothing else is accepted)."""

    timezone = forms.ChoiceField(
        label="Time zone",
        choices=(),
        help_text="Reports, budgets and prices count days from midnight here.",
    )

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("auto_id", "timezone_%s")
        super().__init__(*args, **kwargs)
        self.fields["timezone"].choices = [(name, name) for name in timezone_names()]
