"""pqlkit in a FastAPI app: a lifespan owning an AsyncClient, a dependency handing it out.

The lifespan builds one :class:`pqlkit.AsyncClient` when the app starts and
closes it (delivering what is due) when it stops; ``Depends(get_pqlkit)`` gives
it to a path operation. Store work runs on the AsyncClient's threads, so a
``track()`` never blocks the event loop, and callbacks may be ``async def``.

Run it: ``uvicorn --app-dir examples --factory fastapi_app:create_app`` (``pip install
uvicorn``), or serve ``app`` (it uses the default SQLite file ``pqlkit.db``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

import pqlkit
from pqlkit import Model, count, did, points, score

logger = logging.getLogger(__name__)

model = Model(
    "fastapi-demo",
    signals={
        "activated": did("warehouse_connected") & did("dashboard_built"),
        "invited": count("teammate_invited") >= 1,
    },
    scores={"behavior": points(activated=30, invited=20)},
    pql=score("behavior") >= 50,
)


async def log_pql(q: pqlkit.Qualification) -> None:
    """An async callback: it runs on the app's event loop (post to Slack with httpx here)."""
    logger.info("PQL %s (%s): %s", q.subject_id, q.account_id, "; ".join(q.explanation))


def pqlkit_lifespan(
    store: pqlkit.Store | str | None = None, **settings: Any
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """A lifespan that keeps an AsyncClient in ``app.state.pqlkit`` while the app runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with pqlkit.AsyncClient(model, store=store, **settings) as client:
            client.on_pql(log_pql)
            app.state.pqlkit = client
            yield

    return lifespan


def get_pqlkit(request: Request) -> pqlkit.AsyncClient:
    """The dependency: the AsyncClient the lifespan created."""
    client: pqlkit.AsyncClient = request.app.state.pqlkit
    return client


Pql = Annotated[pqlkit.AsyncClient, Depends(get_pqlkit)]


class EventIn(BaseModel):
    """The body of ``POST /events``: ``track()``'s parameters."""

    user_id: str
    event: str
    properties: dict[str, Any] = Field(default_factory=dict)
    account_id: str | None = None
    message_id: str | None = None


class TrackOut(BaseModel):
    """What ``POST /events`` answers."""

    scores: dict[str, float]
    qualified: list[str]
    duplicate: bool


def create_app(store: pqlkit.Store | str | None = None, **settings: Any) -> FastAPI:
    """The app, with its pqlkit store and Client settings (``clock``, ``dispatch``, ...)."""
    app = FastAPI(lifespan=pqlkit_lifespan(store, **settings))

    @app.post("/events")
    async def track_event(body: EventIn, client: Pql) -> TrackOut:
        try:
            result = await client.track(
                body.user_id,
                body.event,
                body.properties,
                account_id=body.account_id,
                message_id=body.message_id,
            )
        except pqlkit.ValidationError as error:
            raise HTTPException(422, {"field": error.field, "reason": error.reason}) from None
        return TrackOut(
            scores=result.scores,
            qualified=[q.kind for q in result.qualified],
            duplicate=result.duplicate,
        )

    @app.get("/users/{user_id}/explain")
    async def explain(user_id: str, client: Pql) -> dict[str, Any]:
        return {"user_id": user_id, "explanation": await client.explain(user_id)}

    return app


app = create_app()
