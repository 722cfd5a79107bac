"""Logging in, switching teams, and team settings: members, RunTools keys, tokens, time zone,
audit log.

Every page works without JavaScript: a change redirects back to the settings page with a
message. With htmx, the same URL answers with just the section it changed, which the settings
page also includes, so there is one template per section either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.db.models import F, Model, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from runs.core import upstream
from runs.core.access import (
    TeamRequest,
    choose_team,
    current_membership,
    for_team,
    get_for_team_or_404,
    team_view,
    user_memberships,
)
from runs.core.audit import ACTIONS, record, team_log
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.models import GatewayToken, LastOwnerError, Membership, Role, RunToolsKey
from runs.pipeline.rezone import change_timezone
from runs.teams.forms import (
    AuditFilterForm,
    KeyForm,
    LoginForm,
    MemberAddForm,
    RoleForm,
    TimezoneForm,
    TokenForm,
)

AUDIT_PAGE_SIZE = 50
ROLE_ORDER = {role: position for position, role in enumerate(Role)}


# --- Logging in and out -----------------------------------------------------------------


def _safe_next(request: HttpRequest) -> str:
    """The `next` URL if it stays on this site, else the default page after login."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return resolve_url(settings.LOGIN_REDIRECT_URL)


@sensitive_post_parameters("password")
@csrf_protect
@never_cache
@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    next_url = _safe_next(request)
    if request.user.is_authenticated:
        return redirect(next_url)
    form = LoginForm(request, data=request.POST if request.method == "POST" else None)
    if form.is_bound and form.is_valid():
        # auth's login() gives the session a new key, so a session id an attacker planted
        # before login is worthless after it.
        auth_login(request, form.get_user())
        return redirect(next_url)
    context = {"form": form, "next": next_url, "throttled": form.throttled}
    status = 429 if form.throttled else 200
    return render(request, "registration/login.html", context, status=status)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    auth_logout(request)
    return redirect(settings.LOGOUT_REDIRECT_URL)


# --- Choosing a team --------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@login_required
def team_switch(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            membership = choose_team(request, request.POST.get("team"))
        except Http404:
            target = f"switch to team {request.POST.get('team', '')[:50]!r}"
            record(request, "access_denied", None, target=target)
            raise
        messages.success(request, f"Switched to {membership.team.name}.")
        return redirect(_safe_next(request))
    memberships = list(user_memberships(request.user))
    if not memberships:
        raise Http404("You are not a member of any team.")
    # The layout shows the current team and its navigation, as on any team page.
    request.membership = current_membership(request)
    context = {"memberships": memberships, "next": request.GET.get("next", "")}
    return render(request, "runs/team/switch.html", context)


# --- Team settings ----------------------------------------------------------------------


@dataclass
class Notice:
    """A one-off message shown at the top of the section an htmx request changed."""

    text: str
    level: str = "success"


@dataclass
class MemberRow:
    member: Membership
    editable: bool
    roles: list[Role] = field(default_factory=list)


def _settings_context(request: TeamRequest, **extra) -> dict:
    membership = request.membership
    team = request.team
    members = sorted(
        for_team(Membership, team).select_related("user"),
        key=lambda m: (ROLE_ORDER[Role(m.role)], m.user.get_username()),
    )
    roles = membership.assignable_roles()
    # Active first, newest first; revoked ones stay listed so the history is visible.
    active_first = (F("revoked_at").asc(nulls_first=True), "-created_at", "-id")
    context = {
        "can_manage": membership.can_manage,
        "has_several_teams": user_memberships(request.user).count() > 1,
        "members": [MemberRow(m, membership.may_edit(m), roles) for m in members],
        "keys": for_team(RunToolsKey, team).select_related("created_by").order_by(*active_first),
        "tokens": for_team(GatewayToken, team).select_related("created_by").order_by(*active_first),
        "notice": None,
        "notice_section": None,
    }
    if membership.can_manage:
        context["member_form"] = MemberAddForm(team=team, roles=roles)
        context["key_form"] = KeyForm()
        context["token_form"] = TokenForm()
        context["timezone_form"] = TimezoneForm(initial={"timezone": team.timezone})
    context.update(extra)
    return context


def _done(
    request: TeamRequest, section: str, text: str, *, level: str = "success", reload: bool = False
) -> HttpResponse:
    """After a change: the changed section for htmx, else back to the settings page.

    `reload` is for changes to the caller's own role, after which the whole page differs.
    """
    settings_url = reverse("team_settings")
    if request.htmx and not reload:
        context = _settings_context(request, notice=Notice(text, level), notice_section=section)
        return render(request, f"runs/team/_{section}.html", context)
    messages.add_message(request, messages.SUCCESS if level == "success" else messages.ERROR, text)
    if request.htmx:
        return HttpResponseClientRedirect(settings_url)
    return redirect(f"{settings_url}#{section}")


def _refused(request: TeamRequest, section: str, text: str) -> HttpResponse:
    record(request, "access_denied", request.team, target=f"{request.path}: {text}")
    return _done(request, section, text, level="error")


def _invalid(request: TeamRequest, section: str, **forms) -> HttpResponse:
    """A form with errors, shown where it was filled in (never with a key in it)."""
    context = _settings_context(request, **forms)
    template = f"runs/team/_{section}.html" if request.htmx else "runs/team/settings.html"
    return render(request, template, context)


def _get_or_404(request: TeamRequest, model: type[Model], **lookup):
    """The current team's object, else a 404 that is also written to the audit log."""
    try:
        return get_for_team_or_404(model, request.team, **lookup)
    except Http404:
        record(request, "access_denied", request.team, target=request.path)
        raise


@require_GET
@team_view()
def team_settings(request: TeamRequest) -> HttpResponse:
    """Everyone in the team can read it; only owners and admins get the forms."""
    return render(request, "runs/team/settings.html", _settings_context(request))


@require_POST
@team_view(manage=True)
def member_add(request: TeamRequest) -> HttpResponse:
    form = MemberAddForm(
        request.POST, team=request.team, roles=request.membership.assignable_roles()
    )
    if not form.is_valid():
        return _invalid(request, "members", member_form=form)
    role = Role(form.cleaned_data["role"])
    try:
        with transaction.atomic():
            Membership.objects.create(user=form.user, team=request.team, role=role)
    except IntegrityError:
        # Someone else added them between the form's check and now.
        form.add_error("username", "That user is already a member of this team.")
        return _invalid(request, "members", member_form=form)
    username = form.user.get_username()
    record(request, "member_added", request.team, target=f"{username} as {role.value}")
    return _done(request, "members", f"Added {username} as {role.label.lower()}.")


@require_POST
@team_view(manage=True)
def member_role(request: TeamRequest, membership_id: int) -> HttpResponse:
    member = _get_or_404(request, Membership, pk=membership_id)
    if not request.membership.may_edit(member):
        return _refused(request, "members", "Only an owner can change an owner's role.")
    form = RoleForm(request.POST, roles=request.membership.assignable_roles())
    if not form.is_valid():
        return _refused(request, "members", "That role is not one you can give.")
    old, new = Role(member.role), Role(form.cleaned_data["role"])
    username = member.user.get_username()
    if old == new:
        return _done(request, "members", f"{username} is already {new.label.lower()}.")
    try:
        member.change_role(new)
    except LastOwnerError as error:
        return _done(request, "members", str(error), level="error")
    record(
        request,
        "member_role_changed",
        request.team,
        target=f"{username}: {old.value} → {new.value}",
    )
    text = f"{username} is now {new.label.lower()}."
    return _done(request, "members", text, reload=member.pk == request.membership.pk)


@require_POST
@team_view(manage=True)
def member_remove(request: TeamRequest, membership_id: int) -> HttpResponse:
    member = _get_or_404(request, Membership, pk=membership_id)
    if not request.membership.may_edit(member):
        return _refused(request, "members", "Only an owner can remove an owner.")
    username = member.user.get_username()
    leaving = member.pk == request.membership.pk
    try:
        member.remove()
    except LastOwnerError as error:
        return _done(request, "members", str(error), level="error")
    record(request, "member_removed", request.team, target=username)
    if leaving:
        # Nothing of this team is theirs to see any more.
        messages.success(request, f"You left {request.team.name}.")
        overview = reverse("overview")
        return HttpResponseClientRedirect(overview) if request.htmx else redirect(overview)
    return _done(request, "members", f"Removed {username} from the team.")


@sensitive_post_parameters("key")
@require_POST
@team_view(manage=True)
def key_add(request: TeamRequest) -> HttpResponse:
    form = KeyForm(request.POST)
    if not form.is_valid():
        return _invalid(request, "keys", key_form=form)
    key = RunToolsKey.add(
        request.team,
        form.cleaned_data["label"],
        form.cleaned_data["key"],
        created_by=request.user,
        make_default=form.cleaned_data["make_default"],
    )
    record(request, "key_added", request.team, target=f"{key.label} ({key.masked})")
    default = " It is the team's default key." if key.is_default else ""
    return _done(request, "keys", f"Stored key {key.label} ({key.masked}).{default}")


@dataclass
class KeyTest:
    ok: bool
    summary: str


def _test_key(key: RunToolsKey) -> KeyTest:
    """Ask the upstream for its agents with this key. The result never contains the key,
    which stays sealed until runs.core.upstream puts it on the request."""
    try:
        response = async_to_sync(upstream.call)(SealedKey(key.ciphertext), "GET", "/agents")
    except KeyDecryptionError:
        return KeyTest(False, "cannot be decrypted with the configured RTDASH_ENCRYPTION_KEYS")
    except upstream.UpstreamError as error:
        return KeyTest(False, f"could not be tried: {error.message}")
    if response.status_code != 200:
        # Only the status and the error code: an upstream message might quote the request.
        code = _error_code(response)
        return KeyTest(False, f"was refused by RunTools (HTTP {response.status_code} {code})")
    try:
        agents = response.json()["data"]
        names = [str(a.get("slug") or a.get("id")) for a in agents]
    except (ValueError, KeyError, TypeError, AttributeError):
        return KeyTest(False, "got an answer from RunTools that is not a list of agents")
    listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return KeyTest(True, f"works: RunTools lists {len(names)} agents ({listed})")


def _error_code(response) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return str(code)[:50] if isinstance(code, str) else ""


@require_POST
@team_view(manage=True)
def key_test(request: TeamRequest, key_id: int) -> HttpResponse:
    key = _get_or_404(request, RunToolsKey, pk=key_id, revoked_at__isnull=True)
    result = _test_key(key)
    key.record_test(result.ok)
    name = f"{key.label} ({key.masked})"
    record(request, "key_tested", request.team, target=f"{name}: {result.summary}")
    level = "success" if result.ok else "error"
    return _done(request, "keys", f"Key {name} {result.summary}.", level=level)


@require_POST
@team_view(manage=True)
def key_default(request: TeamRequest, key_id: int) -> HttpResponse:
    key = _get_or_404(request, RunToolsKey, pk=key_id, revoked_at__isnull=True)
    key.make_default()
    name = f"{key.label} ({key.masked})"
    record(request, "key_default_set", request.team, target=name)
    return _done(request, "keys", f"Runs now use {name}.")


@require_POST
@team_view(manage=True)
def key_revoke(request: TeamRequest, key_id: int) -> HttpResponse:
    key = _get_or_404(request, RunToolsKey, pk=key_id, revoked_at__isnull=True)
    was_default = key.is_default
    successor = key.revoke()
    name = f"{key.label} ({key.masked})"
    record(request, "key_revoked", request.team, target=name)
    text = f"Revoked {name}."
    if successor is not None:
        text += f" Runs now use {successor.label} ({successor.masked})."
    elif was_default:
        text += " The team has no key now: runs will fail until one is added."
    return _done(request, "keys", text)


@never_cache
@require_POST
@team_view(manage=True)
def token_add(request: TeamRequest) -> HttpResponse:
    form = TokenForm(request.POST)
    if not form.is_valid():
        return _invalid(request, "tokens", token_form=form)
    token, plaintext = GatewayToken.issue(
        request.team,
        form.cleaned_data["name"],
        created_by=request.user,
        expires_at=form.expires_at(),
        requests_per_minute=form.cleaned_data["requests_per_minute"],
    )
    record(request, "token_issued", request.team, target=f"{token.name} ({token.prefix}…)")
    # The only time the plaintext exists outside the caller's hands: rendered into this one
    # response (never a redirect, a message or the session, which would store it).
    context = _settings_context(request, new_token=token, new_token_plaintext=plaintext)
    template = "runs/team/_tokens.html" if request.htmx else "runs/team/settings.html"
    return render(request, template, context)


@require_POST
@team_view(manage=True)
def token_revoke(request: TeamRequest, token_id: int) -> HttpResponse:
    token = _get_or_404(request, GatewayToken, pk=token_id, revoked_at__isnull=True)
    token.revoke()
    record(request, "token_revoked", request.team, target=f"{token.name} ({token.prefix}…)")
    return _done(request, "tokens", f"Revoked token {token.name}; it no longer works.")


@require_POST
@team_view(manage=True)
def team_timezone(request: TeamRequest) -> HttpResponse:
    """Set the team's time zone; its daily rollups are rebuilt on the new days at once."""
    form = TimezoneForm(request.POST)
    if not form.is_valid():
        return _invalid(request, "timezone", timezone_form=form)
    name = form.cleaned_data["timezone"]
    if not change_timezone(request.team, name, request=request):
        return _done(request, "timezone", f"The team's time zone is already {name}.")
    text = f"The team's days now begin at midnight in {name}; its reports were recounted."
    return _done(request, "timezone", text)


@require_GET
@team_view(manage=True)
def team_audit(request: TeamRequest) -> HttpResponse:
    """The team's audit log, newest first, in pages that continue before a given event;
    filtered by action, actor and days (`?action=&actor=&since=&until=`)."""
    actors = sorted(for_team(Membership, request.team).values_list("user__username", flat=True))
    form = AuditFilterForm(request.GET, actors=actors)
    events = form.apply(team_log(request.team))
    before = request.GET.get("before")
    if before:
        # The cursor must itself be in this team's log: any other id is unknown here.
        cursor = _get_from(team_log(request.team), before)
        events = events.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
        )
    page = list(events[: AUDIT_PAGE_SIZE + 1])
    more = len(page) > AUDIT_PAGE_SIZE
    page = page[:AUDIT_PAGE_SIZE]
    for event in page:
        event.label = ACTIONS.get(event.action, event.action)
    query = form.query_string()
    context = {
        "events": page,
        "next_before": page[-1].id if more else None,
        "form": form,
        "filter_query": f"{query}&" if query else "",
        "filtered": bool(query),
    }
    template = "runs/team/_audit_rows.html" if request.htmx and before else "runs/team/audit.html"
    return render(request, template, context, status=400 if form.errors else 200)


def _get_from(events, pk: str):
    try:
        return events.get(pk=pk)
    except (events.model.DoesNotExist, ValueError, TypeError):
        raise Http404("No such event") from None
