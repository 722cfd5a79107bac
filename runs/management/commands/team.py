"""Manage teams from scripts: create one, add members, store its RunTools key, issue tokens.

    manage.py team create SLUG [--name NAME] [--timezone ZONE]
    manage.py team set-timezone SLUG ZONE                (recounts the team's days)
    manage.py team add-member SLUG USERNAME --role ROLE
    manage.py team set-key SLUG [--label LABEL]          (the key is read from stdin)
    manage.py team issue-token SLUG [--name NAME]        (prints the token and nothing else)

A bad argument is one line on stderr and exit status 1, never a usage screen or a traceback.
"""

from __future__ import annotations

import getpass
import sys
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from runs.core.audit import record
from runs.core.days import DEFAULT_TIMEZONE, validate_timezone_name
from runs.models import GatewayToken, LastOwnerError, Membership, Role, RunToolsKey, Team
from runs.pipeline.rezone import change_timezone
from runs.teams.forms import KeyForm

ACTOR = "manage.py team"


class Command(BaseCommand):
    help = "Create teams, add members, store a team's RunTools key, issue gateway tokens."
    # call_command("team", "set-key", ..., stdin=io.StringIO(key)) in tests.
    stealth_options = ("stdin",)

    def run_from_argv(self, argv: list[str]) -> None:
        # Parse once with errors raised rather than printed with argparse's usage text, so a
        # script sees the one line that says what is wrong. Then run as usual.
        self._called_from_command_line = False
        try:
            self.create_parser(argv[0], argv[1]).parse_args(argv[2:])
        except CommandError as error:
            self.stderr.write(f"CommandError: {error}")
            sys.exit(error.returncode)
        super().run_from_argv(argv)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        report = parser.error

        def error(message: str):
            # argparse repeats unexpected arguments, and a key pasted onto the command line
            # would end up in a CI log as well as in the shell history: never repeat them.
            if message.startswith("unrecognized arguments"):
                message = (
                    "unexpected arguments (not repeated here; set-key reads the key from "
                    "stdin, never from the command line)"
                )
            return report(message)

        parser.error = error
        return parser

    def add_arguments(self, parser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        create = actions.add_parser("create", help="Create a team.")
        create.add_argument("slug")
        create.add_argument("--name", help="Display name (defaults to the slug).")
        create.add_argument(
            "--timezone", default=DEFAULT_TIMEZONE, help="IANA time zone of the team's days."
        )

        set_timezone = actions.add_parser(
            "set-timezone", help="Change a team's time zone and recount its days."
        )
        set_timezone.add_argument("slug")
        set_timezone.add_argument("zone", metavar="ZONE")

        add_member = actions.add_parser(
            "add-member", help="Add an existing user to a team, or change their role."
        )
        add_member.add_argument("slug")
        add_member.add_argument("username")
        add_member.add_argument("--role", required=True, choices=Role.values)

        set_key = actions.add_parser(
            "set-key", help="Store the team's RunTools key, read from stdin, as its default."
        )
        set_key.add_argument("slug")
        set_key.add_argument("--label", default="default")

        issue = actions.add_parser("issue-token", help="Issue a gateway token and print it.")
        issue.add_argument("slug")
        issue.add_argument("--name", default="script")
        issue.add_argument("--expires-days", type=int, default=None)
        issue.add_argument("--requests-per-minute", type=int, default=None)

    def handle(self, *args, action: str, **options) -> None:
        handler = {
            "create": self.create,
            "set-timezone": self.set_timezone,
            "add-member": self.add_member,
            "set-key": self.set_key,
            "issue-token": self.issue_token,
        }[action]
        handler(**options)

    # --- actions ------------------------------------------------------------------------

    def create(self, *, slug: str, name: str | None, timezone: str, **options) -> None:
        _check_zone(timezone, "--timezone")
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError(
                f"{slug!r} is not a valid slug (letters, numbers, - and _ only)"
            ) from None
        if len(slug) > Team._meta.get_field("slug").max_length:
            raise CommandError("a team slug has at most 50 characters")
        with transaction.atomic():
            if Team.objects.filter(slug=slug).exists():
                raise CommandError(f"team {slug} already exists")
            team = Team.objects.create(slug=slug, name=(name or slug)[:100], timezone=timezone)
            record(None, "team_created", team, target=team.slug, actor_label=ACTOR)
        zone = "" if timezone == DEFAULT_TIMEZONE else f", days in {timezone}"
        self.stdout.write(f"Created team {team.slug} ({team.name}{zone}).")

    def set_timezone(self, *, slug: str, zone: str, **options) -> None:
        team = _team(slug)
        _check_zone(zone, "ZONE")
        if not change_timezone(team, zone, actor_label=ACTOR):
            self.stdout.write(f"{team.slug}'s time zone is already {zone}.")
            return
        self.stdout.write(f"{team.slug}'s days now begin at midnight in {zone}; rollups rebuilt.")

    def add_member(self, *, slug: str, username: str, role: str, **options) -> None:
        team = _team(slug)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}")
        membership, created = Membership.objects.get_or_create(
            user=user, team=team, defaults={"role": role}
        )
        if created:
            record(None, "member_added", team, target=f"{username} as {role}", actor_label=ACTOR)
            self.stdout.write(f"Added {username} to {team.slug} as {role}.")
            return
        old = membership.role
        if old == role:
            self.stdout.write(f"{username} is already {role} of {team.slug}.")
            return
        try:
            membership.change_role(role)
        except LastOwnerError as error:
            raise CommandError(str(error)) from None
        target = f"{username}: {old} → {role}"
        record(None, "member_role_changed", team, target=target, actor_label=ACTOR)
        self.stdout.write(f"{username} is now {role} of {team.slug}.")

    def set_key(self, *, slug: str, label: str, **options) -> None:
        team = _team(slug)
        stream = options.get("stdin") or sys.stdin
        # Never from argv, which other users can read in the process list and shells keep
        # in their history. A person at a terminal is prompted without echo.
        plaintext = getpass.getpass("RunTools key: ") if stream.isatty() else stream.read()
        form = KeyForm({"label": label, "key": plaintext.strip(), "make_default": True})
        if not form.is_valid():
            field, errors = next(iter(form.errors.items()))
            where = "the key on stdin" if field == "key" else f"--{field}"
            raise CommandError(f"{where}: {errors[0]}")
        key = RunToolsKey.add(team, label, form.cleaned_data["key"], make_default=True)
        record(None, "key_added", team, target=f"{key.label} ({key.masked})", actor_label=ACTOR)
        self.stdout.write(f"Stored key {key.label} ({key.masked}) for {team.slug}; runs use it.")

    def issue_token(
        self,
        *,
        slug: str,
        name: str,
        expires_days: int | None,
        requests_per_minute: int | None,
        **options,
    ) -> None:
        team = _team(slug)
        if not name.strip() or len(name) > 100:
            raise CommandError("--name must be 1 to 100 characters")
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1")
        if requests_per_minute is not None and requests_per_minute < 1:
            raise CommandError("--requests-per-minute must be at least 1")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        token, plaintext = GatewayToken.issue(
            team, name, expires_at=expires_at, requests_per_minute=requests_per_minute
        )
        record(
            None, "token_issued", team, target=f"{token.name} ({token.prefix}…)", actor_label=ACTOR
        )
        # Only the token, so `TOKEN=$(manage.py team issue-token acme)` just works.
        self.stdout.write(plaintext)


def _check_zone(name: str, where: str) -> None:
    try:
        validate_timezone_name(name)
    except ValidationError:
        # Not repeated: a name that is not a zone may be anything at all.
        raise CommandError(
            f"{where} must be an IANA time zone name, such as Europe/Berlin or UTC"
        ) from None


def _team(slug: str) -> Team:
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        raise CommandError(f"no team {slug!r}")
    return team
