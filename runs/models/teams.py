"""Teams and their secrets: members and roles, RunTools keys, gateway tokens, the audit log."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, tzinfo

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from runs.core.days import DEFAULT_TIMEZONE, validate_timezone_name, zone_named


class Team(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)
    # Where the team's days begin and end: rollups, reports, budgets and prices count a run
    # on the date it started here (runs.core.days). Change it with runs.pipeline.rezone.
    timezone = models.CharField(
        max_length=64, default=DEFAULT_TIMEZONE, validators=[validate_timezone_name]
    )

    def __str__(self) -> str:
        return self.slug

    @property
    def zone(self) -> tzinfo:
        return zone_named(self.timezone)

    def default_key(self) -> RunToolsKey | None:
        return self.runtools_keys.filter(is_default=True, revoked_at__isnull=True).first()

    def active_keys(self) -> models.QuerySet[RunToolsKey]:
        return self.runtools_keys.filter(revoked_at__isnull=True)


class LastOwnerError(ValueError):
    """The change would leave a team without an owner, and nobody could manage it again."""

    def __init__(self) -> None:
        super().__init__("A team always keeps at least one owner.")


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def can_manage(self) -> bool:
        """Owners and admins manage members, keys, tokens, prices and budgets."""
        return self.role in (Role.OWNER, Role.ADMIN)

    @property
    def can_run(self) -> bool:
        return self.role != Role.VIEWER

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER

    def assignable_roles(self) -> list[Role]:
        """The roles this member may give others: only owners make (or unmake) owners."""
        if self.is_owner:
            return list(Role)
        if self.can_manage:
            return [Role.ADMIN, Role.MEMBER, Role.VIEWER]
        return []

    def may_edit(self, other: Membership) -> bool:
        """Whether this member may change `other`'s role or remove them from the team."""
        if other.team_id != self.team_id or not self.can_manage:
            return False
        # An admin could otherwise demote the owners and take the team over.
        return self.is_owner or not other.is_owner

    def _other_owners(self) -> models.QuerySet[Membership]:
        # select_for_update serialises two owners demoting each other at the same moment on
        # PostgreSQL; SQLite already serialises writers (IMMEDIATE transactions).
        return (
            Membership.objects.select_for_update()
            .filter(team_id=self.team_id, role=Role.OWNER)
            .exclude(pk=self.pk)
        )

    def change_role(self, role: Role | str) -> None:
        """Give this member a new role. Raises LastOwnerError for the team's last owner."""
        with transaction.atomic():
            if self.is_owner and role != Role.OWNER and not self._other_owners().exists():
                raise LastOwnerError
            self.role = Role(role)
            self.save(update_fields=["role"])

    def remove(self) -> None:
        """Take this member out of the team. Raises LastOwnerError for the team's last owner."""
        with transaction.atomic():
            if self.is_owner and not self._other_owners().exists():
                raise LastOwnerError
            self.delete()


class RunToolsKey(models.Model):
    """A team's RunTools API key. Only ciphertext is stored; see runs.core.crypto."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="runtools_keys")
    label = models.CharField(max_length=100)
    ciphertext = models.TextField(editable=False)
    # Enough to recognise a key in a list ("rt_live_…abcd"), never enough to use it.
    kind_prefix = models.CharField(max_length=16, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    is_default = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["team"],
                condition=models.Q(is_default=True, revoked_at__isnull=True),
                name="one_default_key_per_team",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.kind_prefix}…{self.last_four}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def add(
        cls,
        team: Team,
        label: str,
        plaintext: str,
        *,
        created_by=None,
        make_default: bool = False,
    ) -> RunToolsKey:
        """Store a new key, encrypted. A team's first active key becomes its default."""
        with transaction.atomic():
            key = cls(team=team, label=label, created_by=created_by)
            key.set_secret(plaintext)
            key.save()
            if make_default or team.default_key() is None:
                key.make_default()
        return key

    def make_default(self) -> None:
        """Make this the key the team's runs use. Only an active key can be the default."""
        if not self.is_active:
            raise ValueError("A revoked key cannot be the default.")
        with transaction.atomic():
            # Clear the old default first: the constraint allows one default per team.
            RunToolsKey.objects.filter(team_id=self.team_id, is_default=True).exclude(
                pk=self.pk
            ).update(is_default=False)
            self.is_default = True
            self.save(update_fields=["is_default"])

    def revoke(self) -> RunToolsKey | None:
        """Revoke this key and forget its ciphertext; returns the team's new default, if any.

        A revoked key is never used again, so there is no reason to keep something that
        decrypts to it. When the default is revoked, the newest remaining key takes over so
        the team's runs keep working.
        """
        with transaction.atomic():
            was_default = self.is_default
            self.revoked_at = timezone.now()
            self.is_default = False
            self.ciphertext = ""
            self.save(update_fields=["revoked_at", "is_default", "ciphertext"])
            if not was_default:
                return None
            successor = self.team.active_keys().order_by("-created_at", "-id").first()
            if successor is not None:
                successor.make_default()
            return successor

    def record_test(self, ok: bool) -> None:
        self.last_tested_at = timezone.now()
        self.last_test_ok = ok
        self.save(update_fields=["last_tested_at", "last_test_ok"])

    def set_secret(self, plaintext: str) -> None:
        from runs.core.crypto import encrypt

        self.ciphertext = encrypt(plaintext)
        self.kind_prefix = _key_kind_prefix(plaintext)
        self.last_four = plaintext[-4:]


def _key_kind_prefix(plaintext: str) -> str:
    for prefix in ("rt_live_", "rt_test_"):
        if plaintext.startswith(prefix):
            return prefix
    return "rt_"


TOKEN_PREFIX = "rtd_"  # noqa: S105 - a prefix, not a secret


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


class GatewayToken(models.Model):
    """An rtdash token for scripts. The plaintext is shown once; only its SHA-256 is kept."""

    team = models.ForeignKey(Team, models.CASCADE, related_name="gateway_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, team: Team, name: str, **fields) -> tuple[GatewayToken, str]:
        """Create a token and return it with its plaintext, which is never stored."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            team=team,
            name=name,
            prefix=plaintext[:12],
            token_hash=hash_token(plaintext),
            **fields,
        )
        return token, plaintext

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    @property
    def status(self) -> str:
        """One of active, expired or revoked: for lists and badges."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.is_usable() else "expired"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])


class AuditEvent(models.Model):
    """Append-only record of who did what. Never holds a secret."""

    team = models.ForeignKey(Team, models.CASCADE, null=True, blank=True, related_name="audit")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text so the log still says who it was after the user is deleted.
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=50)
    target = models.CharField(max_length=200, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The team's audit page, newest first.
            models.Index(fields=["team", "-created_at"], name="audit_team_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target}"

    def save(self, *args, **kwargs) -> None:
        # Append-only: an event, once written, is evidence and is never rewritten.
        if not self._state.adding:
            raise ValueError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit events are append-only.")
