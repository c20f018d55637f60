"""URLs of the example project: the pqlkit endpoints of ``pql_app``, and the nudge views."""

from __future__ import annotations

from django.urls import include, path
from pql_app import views

from pqlkit.integrations.django.views import nudge_urls

urlpatterns = [
    path("events", views.track_event, name="track"),
    path("users/<str:user_id>/explain", views.explain, name="explain"),
    path("qualifications", views.qualifications, name="qualifications"),
    path("login/<str:user_id>", views.login, name="login"),
    path("", views.home, name="home"),
    # the nudge views, the user from the project's own current_user (with django.contrib.auth:
    # include("pqlkit.integrations.django.urls"), the user is request.user)
    path("pqlkit/", include(nudge_urls(current_user=views.current_user))),
]
