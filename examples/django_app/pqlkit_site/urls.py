"""URLs of the example project: the pqlkit endpoints of ``pql_app``."""

from __future__ import annotations

from django.urls import path
from pql_app import views

urlpatterns = [
    path("events", views.track_event, name="track"),
    path("users/<str:user_id>/explain", views.explain, name="explain"),
    path("qualifications", views.qualifications, name="qualifications"),
]
