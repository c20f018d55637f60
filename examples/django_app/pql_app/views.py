"""Views: record an event, explain a user's score, list who qualified."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
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
