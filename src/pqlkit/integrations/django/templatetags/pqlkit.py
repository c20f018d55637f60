"""``{% load pqlkit %}{% pqlkit_nudges %}``: the user's nudges in the page's first render.

``{% pqlkit_nudges %}`` reads the signed-in user from the context's ``request``
(``request.user``: add ``django.template.context_processors.request``);
``{% pqlkit_nudges user_id %}`` takes the id your view put in the context (from its
own sign-in, never from the request's URL). It writes
:func:`~pqlkit.integrations.web.nudges_script` and the script tag pointing at the
nudge views (which must be in the URLconf), with the CSRF token the marks need;
nothing when no one is signed in.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.middleware.csrf import get_token
from django.urls import reverse

from ... import web
from .. import get_client
from ..views import signed_in_user

__all__ = ["pqlkit_nudges", "register"]

register = template.Library()


@register.simple_tag(takes_context=True)
def pqlkit_nudges(context: Any, user_id: object = None) -> web.Markup:
    """The user's nudges as page data, and the script that shows them (one store read)."""
    request = context.get("request")
    if user_id is None and request is not None:
        user_id = signed_in_user(request)
    if user_id is None or user_id == "":
        return web.Markup("")
    return web.nudges_script(
        get_client().nudges(str(user_id)),
        src=reverse("pqlkit_nudges_js"),
        endpoint=reverse("pqlkit_nudges"),
        csrf_token=None if request is None else get_token(request),
    )
