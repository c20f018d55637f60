"""pqlkit's nudges in a FastAPI app: an ``APIRouter`` for the page's script, and the page data.

:func:`nudges_router` serves the current user's nudges (``GET /pqlkit/nudges``), their marks
(``POST /pqlkit/nudges/{key}/{action}``) and the script (``GET /pqlkit/nudges.js``), as
:mod:`pqlkit.integrations.web` describes; :func:`nudges_html` puts the nudges in a page's
first render.

They use an :class:`~pqlkit.AsyncClient`: the endpoints are coroutines, and each store read
or mark runs on the AsyncClient's own small thread pool, so a slow store never blocks the
event loop nor takes threads from FastAPI's pool (which sync endpoints would). Build one
AsyncClient per worker process, in the app's lifespan, and pass it (or a function of the
request returning it).

Needs FastAPI: ``pip install 'pqlkit[fastapi]'``.

Example::

    from pqlkit.integrations.fastapi import nudges_html, nudges_router

    client = pqlkit.AsyncClient(model, store="postgresql://app@db/prod")

    def current_user(request: Request) -> str | None:
        return request.session.get("user_id")          # your sign-in, never the URL

    app.include_router(nudges_router(client, current_user))

    @app.get("/")
    async def home(request: Request) -> HTMLResponse:
        user = current_user(request)
        nudges = await nudges_html(client, user) if user else ""
        return templates.TemplateResponse(request, "home.html", {"nudges": nudges})
"""

from __future__ import annotations

from . import missing_extra

try:
    import fastapi
    from fastapi.responses import JSONResponse, Response
except ImportError as error:  # pragma: no cover - the test environment has FastAPI
    raise missing_extra("pqlkit.integrations.fastapi", "FastAPI", "fastapi") from error

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .._async import AsyncClient
from ..exceptions import ValidationError
from . import web

__all__ = ["CurrentUser", "nudges_html", "nudges_router"]

CurrentUser = Callable[[fastapi.Request], "str | Awaitable[str | None] | None"]
"""Who is signed in, from the request (your session or token): their id, or None (may be async)."""


def nudges_router(
    client: AsyncClient | Callable[[fastapi.Request], AsyncClient],
    current_user: CurrentUser,
    *,
    prefix: str = "/pqlkit",
) -> fastapi.APIRouter:
    """An ``APIRouter`` serving the current user's nudges to the page's script.

    Routes (under ``prefix``): ``GET /nudges`` (``{"nudges": [...]}``),
    ``POST /nudges/{key}/{action}`` (``{"changed": bool}``; 400 ``{"field", "reason"}``
    for an unknown key or action) and ``GET /nudges.js``. A request whose
    ``current_user`` is None gets a 401.

    Args:
        client: The AsyncClient, or a function of the request returning it (when
            the app's lifespan builds it: ``lambda request: request.app.state.pqlkit``).
        current_user: ``current_user(request)``, sync or async: the signed-in user's
            id, or None. Never taken from the URL or body: a user must not read or
            mark another's nudges.
        prefix: Where the routes go.

    Raises:
        ValidationError: ``client`` or ``current_user`` is not usable.
    """
    if not isinstance(client, AsyncClient) and not callable(client):
        raise ValidationError("client", f"must be a pqlkit.AsyncClient, got {client!r}")
    if not callable(current_user):
        raise ValidationError(
            "current_user", f"must be a function of the request, got {current_user!r}"
        )

    def the_client(request: fastapi.Request) -> AsyncClient:
        return client if isinstance(client, AsyncClient) else client(request)

    async def user(request: fastapi.Request) -> str | None:
        found = current_user(request)
        if inspect.isawaitable(found):
            found = await found
        return None if found is None else str(found)

    router = fastapi.APIRouter(prefix=prefix, tags=["pqlkit"])

    @router.get("/nudges")
    async def list_nudges(request: fastapi.Request) -> Response:
        user_id = await user(request)
        if user_id is None:
            return _signed_out()
        return JSONResponse(web.nudges_body(await the_client(request).nudges(user_id)))

    @router.post("/nudges/{key}/{action}")
    async def mark_nudge(request: fastapi.Request, key: str, action: str) -> Response:
        user_id = await user(request)
        if user_id is None:
            return _signed_out()
        try:
            web.check_mark(key, action)
            changed = await the_client(request).mark(user_id, key, action)  # type: ignore[arg-type]
        except ValidationError as error:
            return JSONResponse({"field": error.field, "reason": error.reason}, status_code=400)
        return JSONResponse({"changed": changed})

    @router.get("/nudges.js")
    async def script() -> Response:
        return Response(
            web.nudges_js(),
            media_type="text/javascript",
            headers={"cache-control": "public, max-age=3600"},
        )

    return router


async def nudges_html(client: AsyncClient, user_id: str, *, prefix: str = "/pqlkit") -> web.Markup:
    """The user's nudges and the script tag, for the page's first render (one store read).

    Put it in a Jinja template as it is (``{{ nudges }}``: it is safe markup); ``prefix`` is
    the one given to :func:`nudges_router`.
    """
    return web.nudges_script(
        await client.nudges(user_id), src=f"{prefix}/nudges.js", endpoint=f"{prefix}/nudges"
    )


def _signed_out() -> Response:
    body: dict[str, Any] = {"field": "user", "reason": "not signed in"}
    return JSONResponse(body, status_code=401)
