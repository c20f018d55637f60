"""What every web framework's nudge helpers share: the JSON, the page's ``<script>``, the marks.

The framework modules build on it: ``PqlKit.nudges_blueprint`` (Flask),
:func:`pqlkit.integrations.fastapi.nudges_router` (FastAPI) and
:mod:`pqlkit.integrations.django.urls` (Django) each answer

* ``GET {prefix}/nudges``: the current user's open nudges, ``{"nudges": [...]}``
  (each :meth:`Nudge.to_dict() <pqlkit.Nudge.to_dict>`);
* ``POST {prefix}/nudges/<key>/<action>``: :meth:`Client.mark <pqlkit.Client.mark>`,
  ``{"changed": true | false}``, or a 400 ``{"field": ..., "reason": ...}`` for an
  unknown key or action;
* ``GET {prefix}/nudges.js``: :func:`nudges_js`, the script that shows a nudge.

**The current user comes from your function, never from the request's URL or
body.** Each helper takes ``current_user``, a function of the framework's request
returning the signed-in user's id (from your session or token) or None (answered
with a 401). An id in the URL or body would let anyone read or mark another
user's nudges by changing it.

Needs no framework itself; :func:`nudges_script` puts the nudges in the first
render of a page, so the script needs no extra round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from .._events import Nudge
from ..exceptions import ValidationError

__all__ = [
    "ACTIONS",
    "Markup",
    "SCRIPT_ID",
    "check_mark",
    "nudges_body",
    "nudges_js",
    "nudges_script",
    "to_json",
]

ACTIONS = ("seen", "clicked", "dismissed")
"""The marks a page may post."""

SCRIPT_ID = "pqlkit-nudges"
"""The ``id`` of the ``<script type="application/json">`` :func:`nudges_script` writes."""

_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


class Markup(str):
    """HTML that is safe as it is: Jinja and Django templates insert it unescaped.

    Both honour the ``__html__`` protocol (``markupsafe``, ``django.utils.html``).
    """

    __slots__ = ()

    def __html__(self) -> str:
        return str(self)


def to_json(value: Any) -> str:
    """``value`` as JSON that is safe inside an HTML ``<script>`` element.

    ``<``, ``>`` and ``&`` become ``\\u003c``, ``\\u003e`` and ``\\u0026``, so a
    payload holding ``</script>`` or ``<!--`` cannot end the element or start
    markup; ``JSON.parse`` reads the same value back. Non-ASCII (with U+2028 and
    U+2029) is escaped too.
    """
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).translate(_ESCAPES)


def nudges_body(nudges: Iterable[Nudge]) -> dict[str, Any]:
    """The body of ``GET .../nudges``: ``{"nudges": [nudge.to_dict(), ...]}``."""
    return {"nudges": [n.to_dict() for n in nudges]}


def nudges_script(
    nudges: Iterable[Nudge],
    *,
    src: str | None = None,
    endpoint: str | None = None,
    csrf_token: str | None = None,
) -> Markup:
    """The user's nudges in the page: ``<script type="application/json" id="pqlkit-nudges">``.

    Put it in the page's first render (one store read, no extra request): the
    script of :func:`nudges_js` reads it instead of fetching ``GET .../nudges``.

    Args:
        nudges: What :meth:`Client.nudges <pqlkit.Client.nudges>` returned.
        src: The URL of the script (``.../nudges.js``): when given, a
            ``<script src=... defer>`` follows the data.
        endpoint: That script's ``data-endpoint``: where the routes are
            (default ``/pqlkit/nudges``).
        csrf_token: That script's ``data-csrf-token``, sent with each mark as
            ``X-CSRFToken``.

    Example:
        >>> from datetime import datetime, timezone
        >>> from pqlkit import Nudge
        >>> at = datetime(2026, 1, 5, tzinfo=timezone.utc)
        >>> print(nudges_script([Nudge("u1", "tour", {"title": "</script>!"}, at)]))
        ... # doctest: +NORMALIZE_WHITESPACE
        <script type="application/json" id="pqlkit-nudges">[{"user_id":"u1","key":"tour",\
"payload":{"title":"\\u003c/script\\u003e!"},"created_at":"2026-01-05T00:00:00+00:00",\
"until":null,"seen_at":null,"play":null}]</script>
    """
    data = to_json([n.to_dict() for n in nudges])
    html = f'<script type="application/json" id="{SCRIPT_ID}">{data}</script>'
    if src is not None:
        where = "" if endpoint is None else f' data-endpoint="{_attribute(endpoint)}"'
        if csrf_token is not None:
            where += f' data-csrf-token="{_attribute(csrf_token)}"'
        html += f'<script src="{_attribute(src)}"{where} defer></script>'
    return Markup(html)


def nudges_js() -> str:
    """The script that shows a nudge and posts its marks (shipped in the package).

    It reads the nudges :func:`nudges_script` embedded (else it fetches
    ``GET {endpoint}``), shows the oldest one with the payload's ``title`` and
    ``body``, posts ``seen`` when it shows it, and ``clicked`` or ``dismissed``
    from its two buttons (a click then follows the payload's ``url``, if any).
    Configure it on its ``<script>`` element: ``data-endpoint`` (default
    ``/pqlkit/nudges``) and ``data-csrf-token`` (sent as ``X-CSRFToken``; Django's
    ``csrftoken`` cookie is sent without it). Dependency-free; no ``innerHTML``.
    """
    return resources.files(__package__).joinpath("static/pqlkit-nudges.js").read_text("utf-8")


def check_mark(key: str, action: str) -> None:
    """Refuse a mark's ``action`` before it reaches the store.

    Raises:
        ValidationError: ``action`` is not ``seen``, ``clicked`` or ``dismissed``;
            ``key`` is empty.
    """
    if action not in ACTIONS:
        raise ValidationError("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    if not key:
        raise ValidationError("key", "must not be empty")


def _attribute(value: str) -> str:
    return (
        value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    )
