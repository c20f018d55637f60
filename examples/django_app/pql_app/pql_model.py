"""The PQL model this app scores users with."""

from __future__ import annotations

from pqlkit import Model, count, days, did, idle, points, score, signal

model = Model(
    "django-demo",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
        "dormant": idle() >= days(14),
    },
    scores={"behavior": points(activated=30, invited=20, dormant=-25)},
    pql=(score("behavior") >= 50) & ~signal("dormant"),
)
