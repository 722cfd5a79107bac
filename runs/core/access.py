"""Tenancy: the one place that decides which team's data a request may read.

Every page and endpoint reaches team data through `for_team` or `get_for_team_or_404`, never by
id alone. Anything outside the caller's team is a 404, so outsiders cannot even learn that an
id exists.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from django.contrib.auth.views import redirect_to_login
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails

from runs.models import Membership, Team

M = TypeVar("M", bound=Model)

SESSION_TEAM_KEY = "rtdash_team_id"


class HtmxRequest(HttpRequest):
    htmx: HtmxDetails


class TeamRequest(HtmxRequest):
    """What `team_view` hands a view: the caller's membership in the current team."""

    membership: Membership
    team: Team


def for_team(model: type[M], team: Team) -> QuerySet[M]:
    return model.objects.filter(team=team)


def get_for_team_or_404(model: type[M], team: Team, **lookup) -> M:
    try:
        return model.objects.get(team=team, **lookup)
    except (model.DoesNotExist, ValueError, TypeError):
        # ValueError/TypeError: an id of the wrong shape is as unknown as a missing one.
        raise Http404(f"No such {model._meta.verbose_name}") from None


def user_memberships(user) -> QuerySet[Membership]:
    """The teams a user belongs to, in the order the team switcher lists them."""
    return Membership.objects.filter(user=user).select_related("team").order_by("team__slug")


def choose_team(request: HttpRequest, team_id: object) -> Membership:
    """Make one of the user's teams the current one for this session; 404 for any other."""
    try:
        membership = user_memberships(request.user).get(team_id=team_id)
    except (Membership.DoesNotExist, ValueError, TypeError):
        raise Http404("No such team") from None
    request.session[SESSION_TEAM_KEY] = membership.team_id
    return membership


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership for the team chosen in this session, else the user's first team."""
    if not request.user.is_authenticated:
        return None
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    chosen = request.session.get(SESSION_TEAM_KEY)
    membership = None
    if chosen is not None:
        membership = memberships.filter(team_id=chosen).first()
    if membership is None:
        membership = memberships.order_by("team__slug").first()
    return membership


def _to_login(request: HttpRequest) -> HttpResponse:
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return redirect_to_login(request.get_full_path())
    # Following a redirect, htmx would put the login form inside the part of the page it was
    # updating; send the whole page there instead, and back to that page after login.
    login = redirect_to_login(htmx.current_url_abs_path or request.get_full_path())
    return HttpResponseClientRedirect(login.url)


def team_view(*, manage: bool = False, run: bool = False) -> Callable[[Callable], Callable]:
    """Decorate a page view: logged in, a member of the current team, with enough role.

    Sets `request.membership` and `request.team`. A user with no team, or without the role
    the view needs, gets a 404 page rather than a hint of what is there.
    """

    def decorator(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            if not request.user.is_authenticated:
                return _to_login(request)
            membership = current_membership(request)
            if membership is None:
                raise Http404("You are not a member of any team.")
            if (manage and not membership.can_manage) or (run and not membership.can_run):
                from runs.core.audit import record

                record(request, "access_denied", membership.team, target=request.path)
                raise Http404("Not available to your role.")
            request.membership = membership
            request.team = membership.team
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
