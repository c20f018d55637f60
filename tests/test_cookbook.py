"""The PQL definitions from the literature (examples/, docs/cookbook.md) behave as written.

Each definition is driven through ``Client(model, store=MemoryStore(),
clock=FrozenClock(T0), dispatch="inline")`` on both sides of its edge, with the
arithmetic written out; each example's ``main()`` and the demo run too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

import pqlkit
from conftest import T0
from pqlkit import Model, Qualification, TrackResult, days, did, hours, signal, time_to
from pqlkit.testing import FrozenClock

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import analytics_tool  # noqa: E402
import crm  # noqa: E402
import data_tooling  # noqa: E402
import demo  # noqa: E402
import developer_tools  # noqa: E402
import email_marketing  # noqa: E402
import firmographic_fit  # noqa: E402
import plays  # noqa: E402
import project_management  # noqa: E402
import tev_score  # noqa: E402
import video_hosting  # noqa: E402

SECOND = timedelta(seconds=1)


class Run:
    """A client on its own frozen clock; events are placed at offsets from T0."""

    def __init__(self, model: Model) -> None:
        self.clock = FrozenClock(T0)
        self.client = pqlkit.Client(
            model, store=pqlkit.MemoryStore(), clock=self.clock, dispatch="inline"
        )
        self.pqls: list[Qualification] = []
        self.pqas: list[Qualification] = []
        self.client.on_pql(self.pqls.append)
        self.client.on_pqa(self.pqas.append)

    def at(
        self,
        offset: timedelta,
        user: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
    ) -> TrackResult:
        """Set the clock to T0 + offset and track the event then."""
        self.clock.set(T0 + offset)
        return self.client.track(user, event, properties, account_id=account_id)

    def leads(self) -> list[str]:
        """Users delivered to on_pql, in order."""
        return [q.subject_id for q in self.pqls]

    def score(self, subject: str, name: str) -> float:
        return self.client.scores(subject)[name]

    def line(self, subject: str, prefix: str, *, of: Literal["user", "account"] = "user") -> str:
        """The explain() line that starts with ``prefix``."""
        lines = self.client.explain(subject, of=of)
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, lines
        return found[0]


@pytest.fixture(name="start")
def fixture_start() -> Iterator[Callable[[Model], Run]]:
    """Open a Run for a model; every client is closed after the test."""
    runs: list[Run] = []

    def start(model: Model) -> Run:
        runs.append(Run(model))
        return runs[-1]

    yield start
    for run in runs:
        run.client.close()


# -- a. data tooling, freemium (examples/data_tooling.py) ------------------------------------
# behavior = activated 30 + invited 20 + api_key 15 + pricing_visit 10 + near_row_limit 10;
# pql: behavior + fit >= 50 (fit is 0 for a user with no traits); pqa: 3+ users in 14 days.


def test_freemium_activation_needs_warehouse_and_dashboard(start: Callable[[Model], Run]) -> None:
    """Activation (+30) takes both a connected warehouse and a built dashboard."""
    run = start(data_tooling.model)
    assert run.at(days(0), "u1", "warehouse_connected").scores["behavior"] == 0
    assert run.at(days(0), "u2", "dashboard_built").scores["behavior"] == 0
    assert run.at(days(1), "u1", "dashboard_built").scores["behavior"] == 30


def test_freemium_45_points_is_not_a_pql_55_is(start: Callable[[Model], Run]) -> None:
    """Activation + API key = 30 + 15 = 45 is short of 50; a pricing visit makes it 55."""
    run = start(data_tooling.model)
    run.at(days(0), "u1", "warehouse_connected")
    run.at(days(0), "u1", "dashboard_built")
    result = run.at(days(1), "u1", "api_key_generated")
    assert result.scores["behavior"] == 30 + 15 == 45
    assert result.qualified == []
    behavior = run.line("u1", "behavior =")
    assert behavior.startswith("behavior = 45: activated +30, invited 0 (false, would be +20)")
    assert "api_key +15" in behavior
    assert "pricing_visit 0 (false, would be +10)" in behavior
    assert "= 45 >= 50" in run.line("u1", "pql:")
    assert run.line("u1", "pql:").endswith("-> false")

    result = run.at(days(2), "u1", "page_viewed", {"path": "/pricing"})
    assert result.scores["behavior"] == 30 + 15 + 10 == 55
    assert [q.subject_id for q in result.qualified] == ["u1"]
    assert run.leads() == ["u1"]


def test_freemium_exactly_50_qualifies(start: Callable[[Model], Run]) -> None:
    """Activation + an invite = 30 + 20 = 50 meets ">= 50"."""
    run = start(data_tooling.model)
    run.at(days(0), "u1", "warehouse_connected")
    assert run.at(days(0), "u1", "dashboard_built").qualified == []  # 30
    result = run.at(days(1), "u1", "teammate_invited", {"email": "b@example.org"})
    assert result.scores["behavior"] == 30 + 20 == 50
    assert [q.subject_id for q in result.qualified] == ["u1"]
    assert "activated" in result.qualified[0].signals
    assert "invited" in result.qualified[0].signals


def test_freemium_published_70_is_60(start: Callable[[Model], Run]) -> None:
    """Activation, an invite and the row limit score 30 + 20 + 10 = 60, not the published 70."""
    run = start(data_tooling.model)
    run.client.identify("u1", {"row_limit": 1_000})
    run.at(days(0), "u1", "warehouse_connected")
    run.at(days(0), "u1", "dashboard_built")
    run.at(days(1), "u1", "teammate_invited", {"email": "b@example.org"})
    run.at(days(2), "u1", "usage_reported", {"rows": 800})
    assert run.score("u1", "behavior") == 30 + 20 + 10 == 60
    assert run.score("u1", "behavior") != 70


@pytest.mark.parametrize(("rows", "near"), [(799, False), (800, True)])
def test_freemium_row_limit_is_80_percent(
    start: Callable[[Model], Run], rows: int, near: bool
) -> None:
    """80% of a 1,000-row limit is 800 rows: 799 is not near it, 800 is (+10)."""
    run = start(data_tooling.model)
    run.client.identify("u1", {"row_limit": 1_000})
    run.at(days(0), "u1", "usage_reported", {"rows": rows})
    assert run.client.signals("u1")["near_row_limit"] is near
    assert run.score("u1", "behavior") == (10 if near else 0)


def test_freemium_row_limit_reads_the_latest_report(start: Callable[[Model], Run]) -> None:
    """``last()`` reads the latest usage report: 900 then 700 rows is no longer near 1,000."""
    run = start(data_tooling.model)
    run.client.identify("u1", {"row_limit": 1_000})
    run.at(days(0), "u1", "usage_reported", {"rows": 900})
    assert run.client.signals("u1")["near_row_limit"] is True
    run.at(days(1), "u1", "usage_reported", {"rows": 700})
    assert run.client.signals("u1")["near_row_limit"] is False


@pytest.mark.parametrize(("later", "counts"), [(days(30) - SECOND, True), (days(30), False)])
def test_freemium_pricing_visit_counts_for_30_days(
    start: Callable[[Model], Run], later: timedelta, counts: bool
) -> None:
    """A /pricing view counts in (T - 30d, T]: 30 days minus 1s later yes, 30 days later no."""
    run = start(data_tooling.model)
    run.at(days(0), "u1", "page_viewed", {"path": "/pricing"})
    run.at(days(0), "u2", "page_viewed", {"path": "/docs"})
    assert run.score("u1", "behavior") == 10
    assert run.score("u2", "behavior") == 0  # only /pricing counts
    run.at(later, "u1", "login")
    assert run.score("u1", "behavior") == (10 if counts else 0)


@pytest.mark.parametrize(("third", "fires"), [(days(14) - SECOND, True), (days(14), False)])
def test_freemium_pqa_three_users_within_14_days(
    start: Callable[[Model], Run], third: timedelta, fires: bool
) -> None:
    """Users active at day 0, day 1 and day 14 - 1s make 3 in (T - 14d, T]; at day 14, 2."""
    run = start(data_tooling.model)
    run.at(days(0), "u1", "login", account_id="acme")
    run.at(days(1), "u2", "login", account_id="acme")
    assert run.pqas == []
    run.at(third, "u3", "login", account_id="acme")
    assert [q.subject_id for q in run.pqas] == (["acme"] if fires else [])
    expected = 3 if fires else 2  # at day 14, u1's day-0 login is exactly 14 days old: out
    line = run.line("acme", "pqa:", of="account")
    assert line == f"pqa: active_users(within=14d) = {expected} >= 3 -> {str(fires).lower()}"


def test_freemium_pqa_fires_once(start: Callable[[Model], Run]) -> None:
    """A fourth active user does not fire the account again."""
    run = start(data_tooling.model)
    for n in range(1, 5):
        run.at(days(n), f"u{n}", "login", account_id="acme")
    assert [q.subject_id for q in run.pqas] == ["acme"]
    assert run.pqas[0].qualified_at == T0 + days(3)  # the third user's login


# -- b. project management (examples/project_management.py) ----------------------------------
# 3+ projects, 2+ invites, 5+ active days, all inside [first seen, first seen + 14d).


def _four_day_trial(run: Run, user: str) -> None:
    """3 projects and 2 invites on days 0-3: everything but the fifth active day."""
    run.at(days(0), user, "signed_up")
    run.at(days(0), user, "project_created")
    run.at(days(1), user, "project_created")
    run.at(days(2), user, "project_created")
    run.at(days(3), user, "teammate_invited")
    run.at(days(3), user, "teammate_invited")


@pytest.mark.parametrize(("fifth_day", "fires"), [(days(14) - SECOND, True), (days(14), False)])
def test_project_management_fifth_active_day_inside_the_trial(
    start: Callable[[Model], Run], fifth_day: timedelta, fires: bool
) -> None:
    """A fifth active day at first seen + 14d - 1s is in the trial; at + 14d it is not."""
    run = start(project_management.model)
    _four_day_trial(run, "pat")
    assert run.leads() == []
    assert run.line("pat", "habit:") == "habit: active_days(since_first_seen=14d) = 4 >= 5 -> false"
    result = run.at(fifth_day, "pat", "login")
    assert [q.subject_id for q in result.qualified] == (["pat"] if fires else [])
    active = 5 if fires else 4  # days 0, 1, 2, 3 (+ day 13, 08:59:59 UTC)
    truth = "true" if fires else "false"
    line = f"habit: active_days(since_first_seen=14d) = {active} >= 5 -> {truth}"
    assert run.line("pat", "habit:") == line


def test_project_management_third_project_after_the_trial_does_not_count(
    start: Callable[[Model], Run],
) -> None:
    """Projects on days 0, 1 and 14: only 2 fall in the trial."""
    run = start(project_management.model)
    run.at(days(0), "kim", "project_created")
    run.at(days(1), "kim", "project_created")
    run.at(days(2), "kim", "teammate_invited")
    run.at(days(3), "kim", "teammate_invited")
    run.at(days(6), "kim", "login")  # active days 0, 1, 2, 3, 6 = 5
    run.at(days(14), "kim", "project_created")
    assert run.leads() == []
    signals = run.client.signals("kim")
    assert signals == {"projects": False, "invites": True, "habit": True}
    line = run.line("kim", "projects:")
    assert line == "projects: count('project_created', since_first_seen=14d) = 2 >= 3 -> false"


def test_project_management_needs_two_invites(start: Callable[[Model], Run]) -> None:
    """3 projects and 5 active days with 1 invite is not enough; the second invite fires."""
    run = start(project_management.model)
    for day in range(3):
        run.at(days(day), "lou", "project_created")
    run.at(days(3), "lou", "teammate_invited")
    run.at(days(4), "lou", "login")  # 5 active days
    assert run.leads() == []
    assert run.client.signals("lou")["invites"] is False
    assert run.at(days(13), "lou", "teammate_invited").qualified[0].subject_id == "lou"


# -- c. email marketing (examples/email_marketing.py) ----------------------------------------


@pytest.mark.parametrize(
    ("contacts", "fires"),
    [(499, False), (500, True), ("500", False)],
    ids=["499", "500", "500-as-a-string"],
)
def test_email_marketing_list_of_500_and_a_campaign(
    start: Callable[[Model], Run], contacts: object, fires: bool
) -> None:
    """An import of 500 contacts (a number) then a campaign qualifies; 499 does not."""
    run = start(email_marketing.model)
    run.at(hours(0), "ada", "list_imported", {"contacts": contacts})
    result = run.at(hours(2), "ada", "campaign_sent")
    assert [q.subject_id for q in result.qualified] == (["ada"] if fires else [])
    assert run.client.signals("ada") == {"big_list": fires, "campaign": True}


def test_email_marketing_needs_a_campaign(start: Callable[[Model], Run]) -> None:
    """A 500-contact list alone is not a PQL; the first campaign makes it one."""
    run = start(email_marketing.model)
    assert run.at(hours(0), "ada", "list_imported", {"contacts": 500}).qualified == []
    line = run.line("ada", "campaign:")
    assert line == "campaign: count('campaign_sent') = 0 >= 1 -> false"
    assert run.at(days(9), "ada", "campaign_sent").qualified[0].subject_id == "ada"


def test_email_marketing_lists_do_not_add_up(start: Callable[[Model], Run]) -> None:
    """Two lists of 300 (300 + 300 = 600 contacts) are not one list of 500+."""
    run = start(email_marketing.model)
    run.at(hours(0), "bo", "list_imported", {"contacts": 300})
    run.at(hours(1), "bo", "list_imported", {"contacts": 300})
    run.at(hours(2), "bo", "campaign_sent")
    assert run.leads() == []
    line = run.line("bo", "big_list:")
    assert line == ("big_list: count('list_imported', where=big_list) = 0 >= 1 -> false")


# -- d. analytics tool (examples/analytics_tool.py) ------------------------------------------

ANALYTICS_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("data_source_connected", {"source": "postgres"}),
    ("dashboard_created", {"dashboard_id": "d1"}),
    ("dashboard_shared", {"dashboard_id": "d1", "recipient": "ben@example.com"}),
]


def test_analytics_connect_create_share_qualifies(start: Callable[[Model], Run]) -> None:
    """Connecting a source, creating a dashboard and sharing it with a user fires at the share."""
    run = start(analytics_tool.model)
    results = [run.at(hours(i), "ann", e, p) for i, (e, p) in enumerate(ANALYTICS_STEPS)]
    assert [r.qualified != [] for r in results] == [False, False, True]
    assert results[-1].qualified[0].signals == ("connected", "dashboard", "shared")


@pytest.mark.parametrize("missing", ["connected", "dashboard", "shared"])
def test_analytics_every_step_is_needed(start: Callable[[Model], Run], missing: str) -> None:
    """Leave out any one of the three steps and there is no PQL."""
    run = start(analytics_tool.model)
    names = ["connected", "dashboard", "shared"]
    for i, (event, props) in enumerate(ANALYTICS_STEPS):
        if names[i] != missing:
            run.at(hours(i), "ann", event, props)
    assert run.leads() == []
    assert run.line("ann", f"{missing}:").endswith("= 0 >= 1 -> false")


def test_analytics_public_link_is_not_sharing_with_a_user(start: Callable[[Model], Run]) -> None:
    """A share with no recipient (a public link) does not count; one to a colleague does."""
    run = start(analytics_tool.model)
    for i, (event, props) in enumerate(ANALYTICS_STEPS[:2]):
        run.at(hours(i), "cy", event, props)
    assert run.at(hours(2), "cy", "dashboard_shared", {"public": True}).qualified == []
    line = run.line("cy", "shared:")
    assert line == "shared: distinct('dashboard_shared', 'recipient') = 0 >= 1 -> false"
    result = run.at(hours(3), "cy", "dashboard_shared", {"recipient": "dee@example.com"})
    assert [q.subject_id for q in result.qualified] == ["cy"]


# -- e. developer tools (examples/developer_tools.py) ----------------------------------------


def _api_calls(user: str, n: int) -> list[dict[str, Any]]:
    return [
        {"user_id": user, "event": "api_called", "timestamp": T0 + timedelta(minutes=i + 1)}
        for i in range(n)
    ]


def test_developer_tools_100th_api_call_qualifies(start: Callable[[Model], Run]) -> None:
    """With a production integration and docs, 99 API calls are not enough; the 100th fires."""
    run = start(developer_tools.model)
    run.at(hours(0), "dev", "integration_created", {"environment": "production"})
    run.at(hours(0), "dev", "docs_generated")
    assert run.client.track_many(_api_calls("dev", 99)).qualified == []
    line = run.line("dev", "api_usage:")
    assert line == "api_usage: count('api_called') = 99 >= 100 -> false"
    result = run.at(hours(2), "dev", "api_called")
    assert [q.subject_id for q in result.qualified] == ["dev"]
    assert run.line("dev", "api_usage:").endswith("= 100 >= 100 -> true")


def test_developer_tools_staging_integration_does_not_count(
    start: Callable[[Model], Run],
) -> None:
    """A staging integration is not a production one."""
    run = start(developer_tools.model)
    run.at(hours(0), "dev", "integration_created", {"environment": "staging"})
    run.at(hours(0), "dev", "docs_generated")
    run.client.track_many(_api_calls("dev", 150))
    assert run.leads() == []
    assert run.client.signals("dev") == {"api_usage": True, "production": False, "docs": True}


def test_developer_tools_needs_docs(start: Callable[[Model], Run]) -> None:
    """100 calls and a production integration without generated docs is not a PQL."""
    run = start(developer_tools.model)
    run.at(hours(0), "dev", "integration_created", {"environment": "production"})
    run.client.track_many(_api_calls("dev", 100))
    assert run.leads() == []
    assert run.at(hours(3), "dev", "docs_generated").qualified[0].subject_id == "dev"


# -- f. CRM (examples/crm.py) ----------------------------------------------------------------


@pytest.mark.parametrize(("email_at", "fires"), [(hours(48), True), (hours(48) + SECOND, False)])
def test_crm_first_email_within_48h_of_signup(
    start: Callable[[Model], Run], email_at: timedelta, fires: bool
) -> None:
    """Signup, import, email: the chain spans 48h exactly (qualifies) or 48h + 1s (does not)."""
    run = start(crm.model)
    run.at(hours(0), "eve", "signed_up")
    run.at(hours(1), "eve", "contacts_imported", {"contacts": 1_200})
    result = run.at(email_at, "eve", "email_sent")
    assert [q.subject_id for q in result.qualified] == (["eve"] if fires else [])
    truth = str(fires).lower()
    assert run.line("eve", "fast_start:") == (
        "fast_start: sequence('signed_up', 'contacts_imported', 'email_sent', within=2d)"
        f" = {truth} -> {truth}"
    )


def test_crm_import_must_come_before_the_email(start: Callable[[Model], Run]) -> None:
    """An email before the import does not complete the chain; the next email after it does."""
    run = start(crm.model)
    run.at(hours(0), "eve", "signed_up")
    run.at(hours(1), "eve", "email_sent")
    assert run.at(hours(2), "eve", "contacts_imported").qualified == []
    assert run.at(hours(3), "eve", "email_sent").qualified[0].subject_id == "eve"


def test_crm_clock_starts_at_signup_not_at_first_visit(start: Callable[[Model], Run]) -> None:
    """A visit 3 days before signup does not eat the 48 hours (it would with time_to)."""
    run = start(crm.model)
    run.at(-days(3), "eve", "page_viewed", {"path": "/pricing"})
    run.at(hours(0), "eve", "signed_up")
    run.at(hours(1), "eve", "contacts_imported")
    assert run.at(hours(47), "eve", "email_sent").qualified[0].subject_id == "eve"


def test_crm_time_to_would_count_from_the_first_visit(start: Callable[[Model], Run]) -> None:
    """Why not time_to: measured from the first event, the same user is 3d + 47h = 119h late."""
    time_to_model = Model(
        "crm-time-to",
        signals={"fast": did("contacts_imported") & (time_to("email_sent") <= hours(48))},
        pql=signal("fast"),
    )
    run = start(time_to_model)
    run.at(-days(3), "eve", "page_viewed", {"path": "/pricing"})
    run.at(hours(0), "eve", "signed_up")
    run.at(hours(1), "eve", "contacts_imported")
    assert run.at(hours(47), "eve", "email_sent").qualified == []
    assert "time_to('email_sent') = 4.96d <= 2d" in run.line("eve", "fast:")  # 119h = 4.96d


# -- g. video hosting (examples/video_hosting.py) --------------------------------------------


@pytest.mark.parametrize(("gap", "fires"), [(hours(48), True), (hours(48) + SECOND, False)])
def test_video_second_upload_within_48h(
    start: Callable[[Model], Run], gap: timedelta, fires: bool
) -> None:
    """A second upload 48h after the first qualifies; 48h + 1s after it does not."""
    run = start(video_hosting.model)
    assert run.at(hours(0), "vic", "video_uploaded").qualified == []  # one video is not enough
    result = run.at(gap, "vic", "video_uploaded")
    assert [q.subject_id for q in result.qualified] == (["vic"] if fires else [])
    truth = str(fires).lower()
    assert run.line("vic", "second_video:") == (
        "second_video: sequence('video_uploaded', 'video_uploaded', within=2d)"
        f" = {truth} -> {truth}"
    )


def test_video_two_uploads_at_the_same_instant_do_not_count(
    start: Callable[[Model], Run],
) -> None:
    """sequence() needs strictly increasing times: two uploads stamped alike are not a pair."""
    run = start(video_hosting.model)
    run.at(hours(0), "vic", "video_uploaded", {"n": 1})
    assert run.at(hours(0), "vic", "video_uploaded", {"n": 2}).qualified == []
    assert run.at(hours(1), "vic", "video_uploaded", {"n": 3}).qualified[0].subject_id == "vic"


def test_video_any_two_uploads_48h_apart_qualify(start: Callable[[Model], Run]) -> None:
    """Known approximation: uploads on days 0, 5 and 6 qualify on day 6, not only the first two."""
    run = start(video_hosting.model)
    run.at(days(0), "vic", "video_uploaded")
    assert run.at(days(5), "vic", "video_uploaded").qualified == []  # 5 days after the first
    assert run.at(days(6), "vic", "video_uploaded").qualified[0].subject_id == "vic"


# -- h. TEV (examples/tev_score.py) ----------------------------------------------------------
# tev = 100 * (time + engagement + virality) / 3; time: 1 up to 2 days, 0 from 14 days,
# (14 - d) / (14 - 2) between; engagement: active days in 14 / 7; virality: invites / 3.


def test_tev_fast_active_viral_user_scores_100(start: Callable[[Model], Run]) -> None:
    """Activated on day 1, active on 7 of 14 days, 3 invites: 100 * (1 + 1 + 1) / 3 = 100."""
    run = start(tev_score.model)
    run.at(days(0), "liz", "login")
    run.at(days(1), "liz", "dashboard_built")  # 1 day <= fast (2 days): time = 1
    for day in range(2, 7):
        run.at(days(day), "liz", "login")  # active days 0..6 = 7: engagement 7/7 = 1
    for name in ("mo", "ned", "ola"):
        run.at(days(6), "liz", "teammate_invited", {"email": f"{name}@example.com"})  # 3/3
    assert run.score("liz", "tev") == pytest.approx(100 * (1 + 1 + 1) / 3)
    assert run.score("liz", "tev") == pytest.approx(100)
    assert run.leads() == ["liz"]


def test_tev_activation_on_day_8_scores_exactly_50(start: Callable[[Model], Run]) -> None:
    """Day-8 activation, 7 active days, no invites: 100 * ((14-8)/(14-2) + 7/7 + 0/3) / 3 = 50."""
    run = start(tev_score.model)
    for day in range(6):
        assert run.at(days(day), "liz", "login").qualified == []
    result = run.at(days(8), "liz", "dashboard_built")  # active days 0..5 and 8 = 7
    assert (14 - 8) / (14 - 2) == 0.5
    assert result.scores["tev"] == pytest.approx(100 * (0.5 + 7 / 7 + 0 / 3) / 3)
    assert result.scores["tev"] == pytest.approx(50)
    assert [q.subject_id for q in result.qualified] == ["liz"]  # 50 >= 50
    line = run.line("liz", "tev =")
    assert line == (
        "tev = 50: time 0.50 (activated after 8d; fast 2d, slow 14d), "
        "engagement 1.00 (7/7), virality 0.00 (0/3)"
    )


def test_tev_one_active_day_less_is_below_50(start: Callable[[Model], Run]) -> None:
    """Day-8 activation, 6 active days: 100 * (0.5 + 6/7 + 0) / 3 = 45.24, no PQL."""
    run = start(tev_score.model)
    for day in range(5):
        run.at(days(day), "liz", "login")
    result = run.at(days(8), "liz", "dashboard_built")  # active days 0..4 and 8 = 6
    assert result.scores["tev"] == pytest.approx(100 * (0.5 + 6 / 7 + 0 / 3) / 3)
    assert result.scores["tev"] == pytest.approx(45.238, abs=1e-3)
    assert result.qualified == []
    assert run.line("liz", "pql:") == "pql: score('tev') = 45.24 >= 50 -> false"


@pytest.mark.parametrize(
    ("activated_at", "time_part", "active"),
    [
        (hours(12), 1.0, 1),  # same calendar day as the signup: 1 active day
        (days(2), 1.0, 2),  # exactly fast
        (days(2) + SECOND, (days(12) - SECOND) / days(12), 2),  # just past fast: linear
        (days(5), (14 - 5) / (14 - 2), 2),  # 0.75
        (days(8), (14 - 8) / (14 - 2), 2),  # 0.5
        (days(14), 0.0, 1),  # exactly slow; the day-0 signup is outside (T - 14d, T]
        (days(20), 0.0, 1),
    ],
    ids=["12h", "2d", "2d+1s", "5d", "8d", "14d", "20d"],
)
def test_tev_time_part(
    start: Callable[[Model], Run], activated_at: timedelta, time_part: float, active: int
) -> None:
    """Time is 1 up to 2 days, 0 from 14 days, linear between: tev = 100 * (time + a/7) / 3."""
    run = start(tev_score.model)
    run.at(days(0), "liz", "signed_up")
    run.at(activated_at, "liz", "dashboard_built")
    assert run.score("liz", "tev") == pytest.approx(100 * (time_part + active / 7 + 0) / 3)
    assert f"time {time_part:.2f} (activated after" in run.line("liz", "tev =")


def test_tev_parts_are_capped_at_1(start: Callable[[Model], Run]) -> None:
    """10 active days and 5 invites still count 1 each: the score stays 100."""
    run = start(tev_score.model)
    run.at(days(0), "liz", "dashboard_built")
    for day in range(1, 10):
        run.at(days(day), "liz", "login")  # 10 active days: min(1, 10/7) = 1
    for n in range(5):
        run.at(days(9), "liz", "teammate_invited", {"email": f"t{n}@example.com"})  # 5/3 -> 1
    assert run.score("liz", "tev") == pytest.approx(100)


def test_tev_virality_counts_distinct_emails(start: Callable[[Model], Run]) -> None:
    """Inviting the same person three times is 1/3 virality: 100 * (1 + 1/7 + 1/3) / 3."""
    run = start(tev_score.model)
    run.at(days(0), "liz", "dashboard_built")
    for _ in range(3):
        run.at(days(0), "liz", "teammate_invited", {"email": "mo@example.com"})
    assert run.score("liz", "tev") == pytest.approx(100 * (1 + 1 / 7 + 1 / 3) / 3)


def test_tev_never_activated_can_still_reach_50(start: Callable[[Model], Run]) -> None:
    """No activation, 7 active days, 3 invites: 100 * (0 + 1 + 1) / 3 = 66.67 >= 50."""
    run = start(tev_score.model)
    for day in range(7):
        run.at(days(day), "liz", "login")
    for name in ("mo", "ned", "ola"):
        run.at(days(6), "liz", "teammate_invited", {"email": f"{name}@example.com"})
    assert run.score("liz", "tev") == pytest.approx(100 * (0 + 1 + 1) / 3)
    assert run.leads() == ["liz"]
    assert "time 0.00 (activated after never" in run.line("liz", "tev =")


# -- i. fit (examples/firmographic_fit.py, on the data-tooling model) -------------------------
# heavy use = activated 30 + invited 20 + api_key 15 + pricing_visit 10 = 75;
# fit = +20 at 200+ employees, -30 on a free-mail domain; pql at behavior + fit >= 50.


def _heavy_use(run: Run, user: str, account: str | None) -> None:
    for day, (event, props) in enumerate(firmographic_fit.HEAVY_USE):
        run.at(days(day), user, event, props, account_id=account)


def test_fit_heavy_free_mail_user_without_company_is_not_a_pql(
    start: Callable[[Model], Run],
) -> None:
    """75 behaviour on gmail.com with no company: 75 - 30 = 45 < 50."""
    run = start(firmographic_fit.model)
    run.client.identify("hobbyist", {"email_domain": "gmail.com"})
    _heavy_use(run, "hobbyist", None)
    assert run.leads() == []
    assert run.score("hobbyist", "behavior") == 30 + 20 + 15 + 10 == 75
    assert run.score("hobbyist", "fit") == -30
    fit_line = run.line("hobbyist", "fit =")
    assert fit_line.startswith("fit = -30: trait('employees', of=\"account\") >= 200 0 (false")
    assert fit_line.endswith("-30")
    pql = run.line("hobbyist", "pql:")
    assert pql.startswith("pql: ((score('behavior') + score('fit')) = 45 >= 50")
    assert pql.endswith("-> false")


def test_fit_same_behaviour_at_a_600_person_company_is_a_pql(
    start: Callable[[Model], Run],
) -> None:
    """The same 75 at acme (600 people, own domain): 75 + 20 = 95; it fires at 30 + 20 = 50."""
    run = start(firmographic_fit.model)
    run.client.group("acme", {"employees": 600})
    run.client.identify("buyer", {"email_domain": "acme.io"}, account_id="acme")
    _heavy_use(run, "buyer", "acme")
    assert run.leads() == ["buyer"]
    assert run.pqls[0].qualified_at == T0 + days(1)  # activation: 30 + fit 20 = 50
    assert run.pqls[0].account_id == "acme"
    assert run.score("buyer", "behavior") + run.score("buyer", "fit") == 75 + 20 == 95


@pytest.mark.parametrize(("employees", "fires"), [(199, False), (200, True)])
def test_fit_company_size_edge(start: Callable[[Model], Run], employees: int, fires: bool) -> None:
    """Activation alone (30) at a 200-person company: 30 + 20 = 50; at 199 people: 30 + 0."""
    run = start(firmographic_fit.model)
    run.client.group("acme", {"employees": employees})
    run.at(days(0), "u1", "warehouse_connected", account_id="acme")
    result = run.at(days(0), "u1", "dashboard_built", account_id="acme")
    assert result.scores["fit"] == (20 if fires else 0)
    assert [q.subject_id for q in result.qualified] == (["u1"] if fires else [])


def test_fit_is_a_weight_not_a_gate(start: Callable[[Model], Run]) -> None:
    """Doing all five things on gmail.com still qualifies: 30+20+15+10+10 - 30 = 55 >= 50."""
    run = start(firmographic_fit.model)
    run.client.identify("hobbyist", {"email_domain": "gmail.com", "row_limit": 1_000})
    _heavy_use(run, "hobbyist", None)
    assert run.leads() == []  # 45
    result = run.at(days(5), "hobbyist", "usage_reported", {"rows": 900})
    assert result.scores["behavior"] == 30 + 20 + 15 + 10 + 10 == 85
    assert [q.subject_id for q in result.qualified] == ["hobbyist"]  # 85 - 30 = 55


def test_fit_company_traits_arriving_later_qualify(start: Callable[[Model], Run]) -> None:
    """Activated (30) at an unknown account; group() reveals 600 people: 30 + 20 = 50 fires."""
    run = start(firmographic_fit.model)
    run.at(days(0), "u1", "warehouse_connected", account_id="acme")
    run.at(days(0), "u1", "dashboard_built", account_id="acme")
    assert run.leads() == []
    run.client.group("acme", {"employees": 600})
    assert run.leads() == ["u1"]


# -- the scripts run ---------------------------------------------------------------------------


MAIN_CASES: list[tuple[Callable[[], None], list[str], list[str]]] = [
    (data_tooling.main, ["-> PQL: dana", "(30 + 10 + 20 = 60)"], []),
    (project_management.main, ["-> PQL: pat"], ["-> PQL: kim"]),
    (email_marketing.main, ["-> PQL: ada"], ["-> PQL: bob"]),
    (analytics_tool.main, ["-> PQL: ann"], ["-> PQL: cy"]),
    (developer_tools.main, ["= 99 >= 100 -> false", "-> PQL: dev"], []),
    (crm.main, ["-> PQL: eve"], ["-> PQL: max"]),
    (video_hosting.main, ["-> PQL: vic"], ["-> PQL: wes"]),
    (tev_score.main, ["-> PQL: liz, tev 50", "tev = 83.33"], []),
    (firmographic_fit.main, ["-> PQL: buyer", "hobbyist: behavior 75 + fit -30"], []),
]


@pytest.mark.parametrize(
    ("main", "shown", "not_shown"), MAIN_CASES, ids=[c[0].__module__ for c in MAIN_CASES]
)
def test_example_main_runs(
    capsys: pytest.CaptureFixture[str],
    main: Callable[[], None],
    shown: list[str],
    not_shown: list[str],
) -> None:
    """Each example's main() runs and prints who qualifies (and not who does not)."""
    main()
    out = capsys.readouterr().out
    for text in shown:
        assert text in out
    for text in not_shown:
        assert text not in out


def test_demo_runs_on_an_sqlite_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The demo's week: jane is a PQL, acme a PQA, sam (gmail, 65 - 30 = 35) is not; data kept."""
    path = tmp_path / "demo.db"
    demo.main(path)
    out = capsys.readouterr().out
    assert f"events are stored in {path}" in out
    assert "PQL ALERT: user jane qualified on Tuesday at 09:00" in out
    assert "PQA ALERT: account acme qualified on Thursday at 09:00" in out
    assert "pql: ((score('behavior') + score('fit')) = 50 >= 50" in out  # jane: 30 + 20
    assert "sam: behavior 65 + fit -30 = 35, below 50" in out  # 30 + 15 + 10 + 10 - 30
    assert "1 PQL (jane), 1 PQA (acme)" in out
    with pqlkit.Client(data_tooling.model, store=f"sqlite:///{path}") as client:
        stats = client.stats()
    assert (stats.users, stats.accounts, stats.pqls, stats.pqas) == (5, 1, 1, 1)


def test_demo_says_which_build_runs_it_and_how_to_run_the_other(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``make demo`` runs the pure build and says so; ``make demo-mypyc`` the compiled one."""
    import pqlkit._core

    demo.main(tmp_path / "demo.db")
    out = capsys.readouterr().out.splitlines()
    if str(pqlkit._core.__file__).endswith(".py"):
        assert out[1].startswith("Running the pure-Python build of pqlkit")
        assert "`make demo-mypyc`" in out[1]
    else:
        assert out[1].startswith("Running the compiled (mypyc) build of pqlkit")
        assert "`make demo`" in out[1]


def test_demo_ends_with_a_backtest_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``make demo`` ends with the backtest of the demo's model on a simulated history."""
    demo.main(tmp_path / "demo.db")
    out = capsys.readouterr().out
    history = pqlkit.simulate(seed=7, users=1_500, accounts=150, days=150)
    table = pqlkit.backtest(data_tooling.model, history, outcome="subscription_started").table()
    assert out.rstrip().endswith(table.rstrip())
    assert "Backtest of 'data-tooling' on a simulated history" in out


def test_demo_reruns_the_same_story(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A second run on the same file starts afresh and prints the same output."""
    path = tmp_path / "demo.db"
    demo.main(path)
    first = capsys.readouterr().out
    demo.main(path)
    assert capsys.readouterr().out == first


def test_demo_runs_as_a_script_from_the_repository_root(tmp_path: Path) -> None:
    """``python examples/demo.py`` works from the repository root and exits 0."""
    done = subprocess.run(
        [sys.executable, "examples/demo.py", str(tmp_path / "demo.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "PQL ALERT: user jane" in done.stdout


def test_cookbook_code_is_the_examples_code() -> None:
    """Every code block in docs/cookbook.md appears verbatim in one of the example scripts."""
    text = (ROOT / "docs" / "cookbook.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    sources = [p.read_text() for p in sorted(EXAMPLES.glob("*.py"))]
    assert len(blocks) == 9  # recipes 1-8 and 10; recipe 9 reuses the data-tooling model
    for block in blocks:
        assert any(block in source for source in sources), block


# -- 10. routing by motion (examples/plays.py) ------------------------------------------------


def test_plays_the_nudge_is_for_small_companies_at_80_percent(
    start: Callable[[Model], Run],
) -> None:
    """79% of the row limit fires nothing, 80% fires the nudge; at a big company, nothing."""
    run = start(plays.model)
    run.client.group("tiny", {"employees": 4})
    run.client.group("bigco", {"employees": 5_000})
    for user, account in (("ada", "tiny"), ("bo", "bigco")):
        run.client.identify(user, {"row_limit": 1_000}, account_id=account)
        assert run.at(timedelta(hours=1), user, "usage_reported", {"rows": 799}).qualified == []
    assert [
        q.play for q in run.at(timedelta(hours=2), "ada", "usage_reported", {"rows": 800}).qualified
    ] == ["upgrade_nudge"]
    assert run.at(timedelta(hours=2), "bo", "usage_reported", {"rows": 900}).qualified == []
    assert run.line("bo", "play upgrade_nudge").endswith("-> false")


def test_plays_the_handoff_needs_three_users_at_a_big_company(
    start: Callable[[Model], Run],
) -> None:
    """Two active users at bigco fire nothing, the third hands it off; three at tiny: nothing."""
    run = start(plays.model)
    run.client.group("tiny", {"employees": 4})
    run.client.group("bigco", {"employees": 5_000})
    fired = [
        (q.play, q.subject_id)
        for i, (user, account) in enumerate(
            [
                ("a", "bigco"),
                ("b", "bigco"),
                ("x", "tiny"),
                ("y", "tiny"),
                ("z", "tiny"),
                ("c", "bigco"),
            ]
        )
        for q in run.at(timedelta(hours=i), user, "login", account_id=account).qualified
    ]
    assert fired == [("ae_handoff", "bigco")]
