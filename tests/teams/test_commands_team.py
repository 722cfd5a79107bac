"""manage.py team, rotate_keys and demo: in-process, and as a script would run them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from runs.core.crypto import KeyDecryptionError, decrypt_for_upstream
from runs.models import AuditEvent, GatewayToken, Membership, Role, RunToolsKey, Team, hash_token
from tests.conftest import TEST_ENCRYPTION_KEY

pytestmark = pytest.mark.usefixtures("fast_passwords")

BASE_DIR = Path(__file__).resolve().parents[2]


def _team(*args, stdin: str | None = None) -> str:
    out = io.StringIO()
    options = {"stdout": out}
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command("team", *args, **options)
    return out.getvalue()


# --- team create / add-member -----------------------------------------------------------


def test_it_creates_a_team(db):
    assert _team("create", "beta", "--name", "Beta Ltd") == "Created team beta (Beta Ltd).\n"
    team = Team.objects.get(slug="beta")
    assert team.name == "Beta Ltd"
    assert AuditEvent.objects.get(action="team_created").team == team


def test_it_names_a_team_after_its_slug_by_default(db):
    _team("create", "gamma")
    assert Team.objects.get(slug="gamma").name == "gamma"


@pytest.mark.parametrize(
    ("slug", "message"),
    [("acme", "team acme already exists"), ("not a slug", "is not a valid slug")],
)
def test_it_refuses_a_bad_team(acme, slug, message):
    with pytest.raises(CommandError, match=message):
        _team("create", slug)


def test_it_adds_a_member(acme, dave):
    assert (
        _team("add-member", "acme", "dave", "--role", "admin") == "Added dave to acme as admin.\n"
    )
    assert Membership.objects.get(user=dave, team=acme).role == Role.ADMIN
    assert AuditEvent.objects.get(action="member_added").target == "dave as admin"


def test_it_changes_the_role_of_an_existing_member(acme, bob):
    assert _team("add-member", "acme", "bob", "--role", "viewer") == "bob is now viewer of acme.\n"
    assert Membership.objects.get(user=bob, team=acme).role == Role.VIEWER
    assert _team("add-member", "acme", "bob", "--role", "viewer") == (
        "bob is already viewer of acme.\n"
    )


def test_it_keeps_the_last_owner(acme, alice):
    with pytest.raises(CommandError, match="at least one owner"):
        _team("add-member", "acme", "alice", "--role", "member")
    assert Membership.objects.get(user=alice).role == Role.OWNER


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add-member", "nosuch", "dave", "--role", "member"), "no team 'nosuch'"),
        (("add-member", "acme", "nobody", "--role", "member"), "no user 'nobody'"),
        (("add-member", "acme", "dave", "--role", "god"), "invalid choice: 'god'"),
        (("add-member", "acme", "dave"), "the following arguments are required: --role"),
    ],
)
def test_it_refuses_bad_member_arguments(acme, dave, args, message):
    with pytest.raises(CommandError, match=message):
        _team(*args)
    assert not Membership.objects.filter(user=dave).exists()


# --- team set-key -----------------------------------------------------------------------


def test_it_stores_a_key_read_from_stdin(acme, acme_key):
    out = _team("set-key", "acme", "--label", "production", stdin="rt_live_fromSTDIN00001234\n")
    assert out == "Stored key production (rt_live_…1234) for acme; runs use it.\n"
    key = RunToolsKey.objects.get(label="production")
    assert decrypt_for_upstream(key.ciphertext) == "rt_live_fromSTDIN00001234"
    assert acme.default_key() == key
    assert AuditEvent.objects.get(action="key_added").actor_label == "manage.py team"


def test_it_never_takes_a_key_from_argv(acme):
    with pytest.raises(CommandError, match="unexpected arguments") as raised:
        _team("set-key", "acme", "rt_live_onTheCommandLine123", stdin="")
    assert "onTheCommandLine" not in str(raised.value)
    assert not RunToolsKey.objects.exists()


@pytest.mark.parametrize(
    ("stdin", "message"),
    [("", "the key on stdin: This field is required"), ("rt_live_two words here", "no spaces")],
)
def test_it_refuses_a_bad_key(acme, stdin, message):
    with pytest.raises(CommandError, match=message) as raised:
        _team("set-key", "acme", stdin=stdin)
    assert "two words" not in str(raised.value)
    assert not RunToolsKey.objects.exists()


# --- team issue-token -------------------------------------------------------------------


def test_it_issues_a_token_and_prints_only_it(acme):
    out = _team("issue-token", "acme", "--name", "deploy", "--requests-per-minute", "30")
    plaintext = out.removesuffix("\n")
    assert re.fullmatch(r"rtd_[A-Za-z0-9_-]{40,}", plaintext)
    token = GatewayToken.objects.get(team=acme)
    assert (token.name, token.requests_per_minute) == ("deploy", 30)
    assert token.token_hash == hash_token(plaintext)
    assert token.is_usable()


def test_it_issues_an_expiring_token(acme):
    _team("issue-token", "acme", "--expires-days", "7")
    assert GatewayToken.objects.get(team=acme).expires_at is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("issue-token", "nosuch"), "no team 'nosuch'"),
        (("issue-token", "acme", "--expires-days", "0"), "--expires-days must be at least 1"),
        (("issue-token", "acme", "--requests-per-minute", "-5"), "must be at least 1"),
        (("issue-token", "acme", "--name", ""), "--name must be 1 to 100 characters"),
    ],
)
def test_it_refuses_bad_token_arguments(acme, args, message):
    with pytest.raises(CommandError, match=message):
        _team(*args)
    assert not GatewayToken.objects.exists()


# --- As a script runs them --------------------------------------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Run manage.py in a subprocess against a fresh, migrated SQLite database."""
    database = tmp_path_factory.mktemp("cli") / "db.sqlite3"
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite:///{database}",
        "RTDASH_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
    }

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    migrated = run("migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    created = run("team", "create", "cli")
    assert created.returncode == 0, created.stderr
    return run


def test_the_cli_prints_only_the_token(cli):
    result = cli("team", "issue-token", "cli", "--name", "ci")
    assert result.returncode == 0
    assert re.fullmatch(r"rtd_[A-Za-z0-9_-]{40,}\n", result.stdout)
    assert result.stderr == ""


def test_the_cli_reads_the_key_from_stdin(cli):
    result = cli("team", "set-key", "cli", "--label", "sim", stdin="rt_test_demo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Stored key sim (rt_test_…demo) for cli; runs use it.\n"


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("team",), "", "the following arguments are required: ACTION"),
        (("team", "frobnicate"), "", "invalid choice: 'frobnicate'"),
        (("team", "create", "cli"), "", "team cli already exists"),
        (("team", "create", "no spaces"), "", "'no spaces' is not a valid slug"),
        (("team", "add-member", "cli", "nobody"), "", "required: --role"),
        (("team", "add-member", "cli", "nobody", "--role", "king"), "", "invalid choice: 'king'"),
        (("team", "add-member", "cli", "nobody", "--role", "admin"), "", "no user 'nobody'"),
        (("team", "set-key", "cli"), "", "the key on stdin: This field is required."),
        (("team", "set-key", "cli", "rt_test_demo"), "", "unexpected arguments (not repeated"),
        (("team", "issue-token", "nosuch"), "", "no team 'nosuch'"),
        (("team", "issue-token", "cli", "--expires-days", "soon"), "", "invalid int value"),
    ],
)
def test_the_cli_gives_one_line_errors(cli, args, stdin, message):
    result = cli(*args, stdin=stdin)
    assert result.returncode != 0
    assert result.stdout == ""
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "rt_test_demo" not in result.stderr


# --- rotate_keys ------------------------------------------------------------------------


def _rotate() -> str:
    out = io.StringIO()
    call_command("rotate_keys", stdout=out)
    return out.getvalue()


def test_it_rotates_every_key_under_the_first_key(acme, globex, settings):
    old, new = TEST_ENCRYPTION_KEY, Fernet.generate_key().decode()
    keys = [
        RunToolsKey.add(acme, "a", "rt_live_aaaaAAAA1111"),
        RunToolsKey.add(globex, "g", "rt_live_ggggGGGG2222"),
    ]

    settings.RTDASH_ENCRYPTION_KEYS = f"{new},{old}"
    assert _rotate() == "Re-encrypted 2 key(s) under the first encryption key.\n"
    # Running it again is harmless.
    assert _rotate() == "Re-encrypted 2 key(s) under the first encryption key.\n"

    settings.RTDASH_ENCRYPTION_KEYS = new  # the old key can go now
    for key, plaintext in zip(keys, ["rt_live_aaaaAAAA1111", "rt_live_ggggGGGG2222"], strict=True):
        key.refresh_from_db()
        assert decrypt_for_upstream(key.ciphertext) == plaintext
    assert AuditEvent.objects.filter(action="key_rotated").count() == 4
    assert {e.team for e in AuditEvent.objects.filter(action="key_rotated")} == {acme, globex}

    settings.RTDASH_ENCRYPTION_KEYS = old
    with pytest.raises(KeyDecryptionError):
        decrypt_for_upstream(keys[0].ciphertext)


def test_it_skips_revoked_keys(acme, acme_key):
    acme_key.revoke()
    assert _rotate() == "Re-encrypted 0 key(s) under the first encryption key.\n"


def test_it_reports_keys_it_cannot_decrypt(acme, settings):
    lost = RunToolsKey.add(acme, "lost", "rt_live_lostLOST0000")
    settings.RTDASH_ENCRYPTION_KEYS = Fernet.generate_key().decode()
    kept = RunToolsKey.add(acme, "kept", "rt_live_keptKEPT0000")
    out = io.StringIO()
    with pytest.raises(CommandError, match=rf"1 key\(s\) cannot be decrypted .*ids {lost.pk}"):
        call_command("rotate_keys", stdout=out)
    assert out.getvalue() == "Re-encrypted 1 key(s) under the first encryption key.\n"
    kept.refresh_from_db()
    assert decrypt_for_upstream(kept.ciphertext) == "rt_live_keptKEPT0000"


# --- demo -------------------------------------------------------------------------------


def test_demo_is_harmless_to_run_twice(db):
    """The login, team, key and token part of the demo (tests/test_demo.py seeds history)."""
    outputs = []
    for _ in range(2):
        out = io.StringIO()
        call_command("demo", "--runs", "0", stdout=out)
        outputs.append(out.getvalue())

    user = get_user_model().objects.get(username="demo")
    assert user.check_password("demo")
    team = Team.objects.get(slug="demo")
    assert Membership.objects.get(user=user, team=team).role == Role.OWNER
    key = team.default_key()
    assert decrypt_for_upstream(key.ciphertext) == "rt_test_demo"
    assert team.active_keys().count() == 1
    tokens = [line.rsplit(" ", 1)[1] for o in outputs for line in o.splitlines() if "token" in line]
    assert len(set(tokens)) == 2
    for plaintext in tokens:
        assert GatewayToken.objects.get(token_hash=hash_token(plaintext)).team == team
