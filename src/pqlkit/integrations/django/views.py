"""The nudge views: the current user's nudges as JSON, their marks, and the page's script.

Include them in your URLconf: ``path("pqlkit/", include("pqlkit.integrations.django.urls"))``
(the current user is ``request.user``, from ``django.contrib.auth``), or with your own
function: ``path("pqlkit/", include(nudge_urls(current_user=my_user)))``.

The routes are those of :mod:`pqlkit.integrations.web`. The mark view is CSRF-protected
even without ``CsrfViewMiddleware``: the script sends Django's ``csrftoken`` cookie as
``X-CSRFToken`` (the ``{% pqlkit_nudges %}`` tag makes sure the cookie is set).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_POST

from ...exceptions import ValidationError
from .. import web
from . import get_client

__all__ = ["CurrentUser", "nudge_urls", "signed_in_user"]

CurrentUser = Callable[[HttpRequest], "str | None"]
"""Who is signed in, from the request (your session or token): their user id, or None."""


def signed_in_user(request: HttpRequest) -> str | None:
    """The default ``current_user``: ``str(request.user.pk)`` when authenticated, else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return str(user.pk)


def nudge_urls(current_user: CurrentUser | None = None) -> list[URLPattern]:
    """The URL patterns of the nudge views, for ``include()``.

    ``nudges`` (``GET``: ``{"nudges": [...]}``), ``nudges/<key>/<action>`` (``POST``:
    ``{"changed": bool}``, 400 naming the field for an unknown key or action) and
    ``nudges.js``, named ``pqlkit_nudges``, ``pqlkit_nudge_mark`` and ``pqlkit_nudges_js``.
    A request whose ``current_user`` is None gets a 401.

    Args:
        current_user: ``current_user(request)``: the signed-in user's id, or None
            (default :func:`signed_in_user`). Never taken from the URL or body: a user
            must not read or mark another's nudges.

    Raises:
        ValidationError: ``current_user`` is not a function.
    """
    who = signed_in_user if current_user is None else current_user
    if not callable(who):
        raise ValidationError("current_user", f"must be a function of the request, got {who!r}")

    def user(request: HttpRequest) -> str | None:
        found = who(request)
        return None if found is None else str(found)

    @require_GET
    def list_nudges(request: HttpRequest) -> HttpResponse:
        user_id = user(request)
        if user_id is None:
            return _signed_out()
        return JsonResponse(web.nudges_body(get_client().nudges(user_id)))

    @csrf_protect
    @require_POST
    def mark_nudge(request: HttpRequest, key: str, action: str) -> HttpResponse:
        user_id = user(request)
        if user_id is None:
            return _signed_out()
        try:
            web.check_mark(key, action)
            changed = get_client().mark(user_id, key, action)  # type: ignore[arg-type]
        except ValidationError as error:
            return JsonResponse({"field": error.field, "reason": error.reason}, status=400)
        return JsonResponse({"changed": changed})

    @require_GET
    @cache_control(public=True, max_age=3600)
    def script(request: HttpRequest) -> HttpResponse:
        return HttpResponse(web.nudges_js(), content_type="text/javascript; charset=utf-8")

    return [
        path("nudges", list_nudges, name="pqlkit_nudges"),
        path("nudges.js", script, name="pqlkit_nudges_js"),
        path("nudges/<str:key>/<str:action>", mark_nudge, name="pqlkit_nudge_mark"),
    ]


def _signed_out() -> JsonResponse:
    body: dict[str, Any] = {"field": "user", "reason": "not signed in"}
    return JsonResponse(body, status=401)
