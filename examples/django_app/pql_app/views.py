"""Views: record an event, explain a user's score, list who qualified; a page with nudges."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

import pqlkit
from pqlkit.integrations.django import get_client


@csrf_exempt
@require_POST
def track_event(request: HttpRequest) -> JsonResponse:
    """``POST /events`` with a JSON body of ``track()``'s parameters."""
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"field": "body", "reason": "must be JSON"}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"field": "body", "reason": "must be a JSON object"}, status=400)
    try:
        result = get_client().track(
            body.get("user_id"),
            body.get("event"),
            body.get("properties"),
            account_id=body.get("account_id"),
            message_id=body.get("message_id"),
        )
    except pqlkit.ValidationError as error:
        return JsonResponse({"field": error.field, "reason": error.reason}, status=400)
    return JsonResponse(
        {
            "scores": result.scores,
            "qualified": [q.kind for q in result.qualified],
            "duplicate": result.duplicate,
        }
    )


@require_GET
def explain(request: HttpRequest, user_id: str) -> JsonResponse:
    """``GET /users/<id>/explain``: the user's explanation lines."""
    return JsonResponse({"user_id": user_id, "explanation": get_client().explain(user_id)})


@require_GET
def qualifications(request: HttpRequest) -> JsonResponse:
    """``GET /qualifications[?before=<id>]``: who qualified, newest first, 20 a page."""
    try:
        page = get_client().qualifications(before=request.GET.get("before"), limit=20)
    except pqlkit.ValidationError as error:
        return JsonResponse({"field": error.field, "reason": error.reason}, status=400)
    return JsonResponse(
        {
            "qualifications": [q.to_dict() for q in page],
            "next": page[-1].id if len(page) == 20 else None,
        }
    )


# -- nudges ------------------------------------------------------------------------------------


# --8<-- [start:nudges]
def current_user(request: HttpRequest) -> str | None:
    """The signed-in user: a stand-in for ``request.user`` (this project has no database),
    from a signed cookie. The nudge views read the user here, never from the URL or body."""
    user: str | None = request.get_signed_cookie("user_id", default=None)
    return user


@require_GET
def login(request: HttpRequest, user_id: str) -> HttpResponse:
    """``GET /login/<id>``: sign in (a stand-in for your real sign-in)."""
    response = HttpResponse(f"signed in as {escape(user_id)}")
    response.set_signed_cookie("user_id", user_id, httponly=True, samesite="Lax")
    return response


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """A page whose first render carries the user's nudges (``{% pqlkit_nudges user_id %}``)."""
    return render(request, "pql_app/home.html", {"user_id": current_user(request)})


# --8<-- [end:nudges]
