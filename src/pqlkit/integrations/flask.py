"""pqlkit in a Flask app: an ``init_app`` extension, and ``flask pqlkit sweep``.

``PqlKit`` builds one :class:`~pqlkit.Client` per app from the app's config,
keeps it in ``app.extensions["pqlkit"]``, flushes due deliveries when each app
context ends (so a failed callback is retried as requests come in), answers a
:class:`~pqlkit.ValidationError` raised in a view with a 400 naming the field,
and adds ``flask pqlkit sweep`` to the app's command line. Callbacks registered
on the extension apply to every app it serves.

Config keys (all optional):

* ``PQLKIT_MODEL``: the :class:`~pqlkit.Model`, or ``"module:attribute"``, when
  ``PqlKit(model=...)`` was not given one;
* ``PQLKIT_STORE``: a store URL or a Store (default: what ``Client`` does
  without one: ``PQLKIT_STORE_URL``, else ``sqlite:///pqlkit.db``);
* ``PQLKIT_SETTINGS``: more keyword arguments for ``pqlkit.Client``
  (``clock``, ``dispatch``, ``max_attempts``, ...);
* ``PQLKIT_FLUSH_ON_TEARDOWN``: flush when an app context ends (default True).

Needs Flask: ``pip install 'pqlkit[flask]'``.

Example::

    from flask import Flask
    from pqlkit.integrations.flask import PqlKit
    from pqlkit.sinks import SlackWebhook

    pql = PqlKit(model=model)
    pql.on_pql(SlackWebhook(os.environ["SLACK_WEBHOOK_URL"]), name="slack")

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["PQLKIT_STORE"] = "postgresql://app@db/prod"
        pql.init_app(app)
        return app
"""

from __future__ import annotations

from . import missing_extra

try:
    import flask
    from flask.cli import AppGroup
except ImportError as error:  # pragma: no cover - the test environment has Flask
    raise missing_extra("pqlkit.integrations.flask", "Flask", "flask") from error

import contextlib
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, overload

import click

from .._client import Client
from .._dispatch import Callback, register_or_decorate
from .._events import TrackResult
from .._loading import load_model
from .._model import Model
from ..exceptions import ClientClosedError, ValidationError
from . import web

__all__ = ["CurrentUser", "PqlKit", "cli", "client_of"]

CurrentUser = Callable[[flask.Request], "str | None"]
"""Who is signed in, from the request (your session or token): their user id, or None."""

_F = TypeVar("_F", bound=Callback)
CallbackKind = str  # "pql", "pqa", "disqualified", or "play:<name>" (see on_play)


class PqlKit:
    """A Flask extension holding one pqlkit Client per app.

    ``PqlKit(app, model=model)``, or ``pql = PqlKit(model=model)`` then
    ``pql.init_app(app)`` in an application factory.

    Args:
        app: The app to initialise now (or call :meth:`init_app` later).
        model: The Model, or ``"module:attribute"``; default: the app's
            ``PQLKIT_MODEL`` config.
    """

    def __init__(self, app: flask.Flask | None = None, *, model: Model | str | None = None) -> None:
        if model is not None and not isinstance(model, (Model, str)):
            raise ValidationError(
                "model", f"must be a pqlkit.Model or 'module:attribute', got {model!r}"
            )
        self.model = model
        self._callbacks: list[tuple[CallbackKind, Callback, str | None]] = []
        self._clients: weakref.WeakSet[Client] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Build the app's Client from its config, flush it at every app-context teardown.

        Raises:
            ValidationError: No model (neither ``model=`` nor ``PQLKIT_MODEL``), or
                one that does not load, or bad Client settings.
        """
        app.config.setdefault("PQLKIT_MODEL", None)
        app.config.setdefault("PQLKIT_STORE", None)
        app.config.setdefault("PQLKIT_SETTINGS", {})
        app.config.setdefault("PQLKIT_FLUSH_ON_TEARDOWN", True)
        wanted = self.model if self.model is not None else app.config["PQLKIT_MODEL"]
        if wanted is None:
            raise ValidationError("PQLKIT_MODEL", "give PqlKit(model=...) or set it in app.config")
        model = load_model(wanted, "model" if self.model is not None else "PQLKIT_MODEL")
        client = Client(model, store=app.config["PQLKIT_STORE"], **app.config["PQLKIT_SETTINGS"])
        for kind, fn, name in self._callbacks:
            _register(client, kind, fn, name)
        app.extensions["pqlkit"] = client
        self._clients.add(client)
        # Flask has no shutdown hook: pqlkit's exit hook closes the client when the
        # process exits, delivering what is due for up to flush_at_exit

        @app.teardown_appcontext
        def flush_pqlkit(exc: BaseException | None) -> None:
            if app.config["PQLKIT_FLUSH_ON_TEARDOWN"]:
                # the app's client may be closed already (close(app), or at exit)
                with contextlib.suppress(ClientClosedError):
                    client.flush()

        @app.errorhandler(ValidationError)
        def bad_input(error: ValidationError) -> tuple[dict[str, str], int]:
            return {"field": error.field, "reason": error.reason}, 400

        app.cli.add_command(cli)

    @property
    def client(self) -> Client:
        """The current app's Client (inside an app or request context)."""
        return client_of(flask.current_app)

    def close(self, app: flask.Flask) -> None:
        """Close ``app``'s Client (delivering what is due, for up to 10 s)."""
        client_of(app).close()

    # -- callbacks ---------------------------------------------------------------------------
    def on(self, kind: CallbackKind, fn: Callback, *, name: str | None = None) -> Callback:
        """Register ``fn`` for ``kind`` on every app's Client, now and initialised later."""
        for client in list(self._clients):
            _register(client, kind, fn, name)
        self._callbacks.append((kind, fn, name))
        return fn

    @overload
    def on_play(self, play: str, fn: _F, /, *, name: str | None = None) -> _F: ...
    @overload
    def on_play(
        self, play: str, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[_F], _F]: ...
    def on_play(
        self, play: str, fn: _F | None = None, /, *, name: str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Decorator: call ``fn`` when a subject fires the model's play ``play``
        (``@pql.on_play("ae_handoff", name="crm")``); an unknown play is a
        ValidationError naming ``play`` when an app's Client gets it."""
        return register_or_decorate(lambda f: self.on(f"play:{play}", f, name=name), fn)

    @overload
    def on_pql(self, fn: _F, /, *, name: str | None = None) -> _F: ...
    @overload
    def on_pql(self, fn: None = None, /, *, name: str | None = None) -> Callable[[_F], _F]: ...
    def on_pql(
        self, fn: _F | None = None, /, *, name: str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Decorator: call ``fn`` when a user qualifies (``@pql.on_pql(name="slack")`` too)."""
        return register_or_decorate(lambda f: self.on("pql", f, name=name), fn)

    @overload
    def on_pqa(self, fn: _F, /, *, name: str | None = None) -> _F: ...
    @overload
    def on_pqa(self, fn: None = None, /, *, name: str | None = None) -> Callable[[_F], _F]: ...
    def on_pqa(
        self, fn: _F | None = None, /, *, name: str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Decorator: call ``fn`` when an account qualifies."""
        return register_or_decorate(lambda f: self.on("pqa", f, name=name), fn)

    @overload
    def on_disqualified(self, fn: _F, /, *, name: str | None = None) -> _F: ...
    @overload
    def on_disqualified(
        self, fn: None = None, /, *, name: str | None = None
    ) -> Callable[[_F], _F]: ...
    def on_disqualified(
        self, fn: _F | None = None, /, *, name: str | None = None
    ) -> _F | Callable[[_F], _F]:
        """Decorator: call ``fn`` when a qualified subject's rule turns false."""
        return register_or_decorate(lambda f: self.on("disqualified", f, name=name), fn)

    # -- nudges ------------------------------------------------------------------------------
    def nudges_blueprint(
        self,
        current_user: CurrentUser,
        *,
        url_prefix: str = "/pqlkit",
        name: str = "pqlkit_nudges",
    ) -> flask.Blueprint:
        """A blueprint serving the current user's nudges to the page's script.

        Routes (under ``url_prefix``): ``GET /nudges`` (``{"nudges": [...]}``),
        ``POST /nudges/<key>/<action>`` (``{"changed": bool}``; 400 naming the
        field for an unknown key or action) and ``GET /nudges.js`` (the script).
        A request whose ``current_user`` is None gets a 401. It also adds the
        template global ``pqlkit_nudges()``: the user's nudges and the script tag
        for the page's first render (``{{ pqlkit_nudges() }}``; nothing when no
        one is signed in).

        Args:
            current_user: ``current_user(flask.request)``: the signed-in user's id,
                or None. Never taken from the URL or body: a user must not read or
                mark another's nudges.
            url_prefix: Where the routes go.
            name: The blueprint's name (for ``url_for``).

        Example::

            app.register_blueprint(pql.nudges_blueprint(lambda request: session.get("user_id")))
        """
        if not callable(current_user):
            raise ValidationError(
                "current_user", f"must be a function of the request, got {current_user!r}"
            )
        blueprint = flask.Blueprint(name, __name__, url_prefix=url_prefix)

        def user() -> str | None:
            found = current_user(flask.request)
            return None if found is None else str(found)

        @blueprint.get("/nudges")
        def list_nudges() -> tuple[dict[str, Any], int]:
            user_id = user()
            if user_id is None:
                return {"field": "user", "reason": "not signed in"}, 401
            return web.nudges_body(self.client.nudges(user_id)), 200

        @blueprint.post("/nudges/<key>/<action>")
        def mark_nudge(key: str, action: str) -> tuple[dict[str, Any], int]:
            user_id = user()
            if user_id is None:
                return {"field": "user", "reason": "not signed in"}, 401
            try:
                web.check_mark(key, action)
                changed = self.client.mark(user_id, key, action)  # type: ignore[arg-type]
            except ValidationError as error:
                return {"field": error.field, "reason": error.reason}, 400
            return {"changed": changed}, 200

        @blueprint.get("/nudges.js")
        def script() -> flask.Response:
            response = flask.Response(web.nudges_js(), mimetype="text/javascript")
            response.cache_control.public = True
            response.cache_control.max_age = 3600
            return response

        @blueprint.app_template_global("pqlkit_nudges")
        def pqlkit_nudges() -> web.Markup:
            user_id = user()
            if user_id is None:
                return web.Markup("")
            return web.nudges_script(
                self.client.nudges(user_id),
                src=flask.url_for(f"{name}.script"),
                endpoint=flask.url_for(f"{name}.list_nudges"),
            )

        return blueprint

    # -- recording ---------------------------------------------------------------------------
    def track(
        self,
        user_id: str,
        event: str,
        properties: Mapping[str, Any] | None = None,
        *,
        account_id: str | None = None,
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> TrackResult:
        """:meth:`Client.track <pqlkit.Client.track>` on the current app's Client."""
        return self.client.track(
            user_id,
            event,
            properties,
            account_id=account_id,
            timestamp=timestamp,
            message_id=message_id,
        )


def client_of(app: flask.Flask) -> Client:
    """The Client :meth:`PqlKit.init_app` built for ``app``.

    Raises:
        RuntimeError: ``app`` was not initialised by a :class:`PqlKit`.
    """
    client = app.extensions.get("pqlkit")
    if not isinstance(client, Client):
        raise RuntimeError("pqlkit is not initialised on this app: call PqlKit.init_app(app)")
    return client


cli = AppGroup("pqlkit", help="pqlkit's commands, on this app's Client (with its callbacks).")
"""``flask pqlkit ...``: added to every app :meth:`PqlKit.init_app` initialises."""


@cli.command("sweep")
@click.option("--now", help="Evaluate as of this aware ISO 8601 time (default: the clock's now).")
def sweep_command(now: str | None) -> None:
    """Fire and deliver what time alone made due (run it from cron every few minutes).

    Re-evaluates the subjects whose truth can change with time alone (``idle()``,
    windows ending, ``requalify_after``), delivers to this app's callbacks, and
    prints one line per qualification or disqualification.
    """
    when = None
    if now is not None:
        try:
            when = datetime.fromisoformat(now)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--now") from None
    client = client_of(flask.current_app)
    try:
        fired = client.sweep(when)
    except ValidationError as error:
        raise click.BadParameter(error.reason, param_hint="--now") from None
    client.flush()
    for q in fired:
        what = "disqualified" if q.disqualified_at is not None else q.kind
        click.echo(f"{what} {q.subject_id}")
    click.echo(f"pqlkit sweep: {len(fired)} fired, {len(client.pending())} pending")


def _register(client: Client, kind: str, fn: Callback, name: str | None) -> None:
    """Register ``fn`` on ``client`` for ``kind`` (``"play:<name>"``: that play's)."""
    if kind.startswith("play:"):
        client.on_play(kind[5:], fn, name=name)
    elif kind in ("pql", "pqa", "disqualified"):
        client.on(kind, fn, name=name)  # type: ignore[arg-type]  # (checked just above)
    else:
        raise ValidationError("kind", 'must be "pql", "pqa", "disqualified" or "play:<name>"')
