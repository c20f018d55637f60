"""``path("pqlkit/", include("pqlkit.integrations.django.urls"))``: the nudge views, the
current user being ``request.user`` (see :func:`~pqlkit.integrations.django.views.nudge_urls`
for your own function)."""

from __future__ import annotations

from .views import nudge_urls

__all__ = ["urlpatterns"]

urlpatterns = nudge_urls()
