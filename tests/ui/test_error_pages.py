"""rtdash's own 404, 403 and 500 pages, in the site's style, when debug is off."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory
from django.views.defaults import permission_denied, server_error

from runs.models import Run
from tests.reporting import finished_run


@pytest.fixture
def production(settings):
    settings.DEBUG = False


def _in_style(html: str) -> None:
    assert "/static/rtdash.css" in html
    assert "/static/favicon.svg" in html
    assert '<main class="page" id="main">' in html


def test_it_answers_an_unknown_address_with_its_404_page(production, client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    html = response.content.decode()
    _in_style(html)
    assert "<h1>Page not found</h1>" in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_it_shows_an_outsider_the_same_404_page(production, client, acme, charlie):
    run = finished_run(acme)
    client.force_login(charlie)
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.content.decode()
    assert Run.objects.filter(pk=run.pk).exists()


def test_its_403_page_is_in_style(production, db):
    request = RequestFactory().get("/settings/")
    request.user = AnonymousUser()
    response = permission_denied(request, PermissionDenied())
    assert response.status_code == 403
    html = response.content.decode()
    _in_style(html)
    assert "<h1>Not allowed</h1>" in html


def test_its_500_page_needs_neither_request_nor_database(production, db, django_assert_num_queries):
    request = RequestFactory().get("/")
    with django_assert_num_queries(0):
        response = server_error(request)
    assert response.status_code == 500
    html = response.content.decode()
    _in_style(html)
    assert "<h1>Something went wrong</h1>" in html
    assert "<script" not in html and "style=" not in html
