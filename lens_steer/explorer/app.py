"""The Dash app: one page whose content follows the URL (``/``, ``/layer/L``, ``/neuron/L/J``, ``/steer``), and the
callbacks behind it.

Every callback answers a user-fixable problem (:class:`~lens_steer.errors.LensSteerError`) with its one line in the
page, and anything unexpected with a short message in the page and the traceback on stderr: never a traceback in
the page, and the server keeps serving. Dash's dev tools (its error overlay) stay off.
"""

from __future__ import annotations

import functools
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable
from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from lens_steer.errors import LensSteerError
from lens_steer.explorer import views
from lens_steer.explorer.data import ExploreData
from lens_steer.explorer.steering import cloze_fact, playground


def _shown(fn: Callable[..., Any], fallback: Callable[[str], Any]) -> Callable[..., Any]:
    """``fn`` with its errors turned into ``fallback(message)``: a LensSteerError's line as it is, anything else
    as a short message (its traceback goes to the server's stderr)."""
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except LensSteerError as exc:
            return fallback(str(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows a message, the server log the traceback
            traceback.print_exc(file=sys.stderr)
            return fallback(f"unexpected error ({type(exc).__name__}: {exc}); the server log has the details")
    return wrapper


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LensSteerError(f"{what} {text!r} is not a number") from None


def page(data: ExploreData, pathname: str | None, search: str | None) -> Any:
    """The view of ``pathname``; a path outside the app's says which ones exist."""
    parts = [p for p in (pathname or "/").split("/") if p]
    query = {k: v[-1] for k, v in urllib.parse.parse_qs((search or "").lstrip("?")).items()}
    if not parts:
        return views.overview(data)
    if parts[0] == "layer" and len(parts) == 2:
        return views.layer_view(data, _int(parts[1], "layer"), query.get("lang"))
    if parts[0] == "neuron" and len(parts) == 3:
        return views.neuron_page(data, _int(parts[1], "layer"), _int(parts[2], "neuron"))
    if parts[0] == "steer" and len(parts) == 1:
        return views.steer_view(data, query)
    raise LensSteerError(f"no page at {pathname}; the pages are /, /layer/L, /neuron/L/J and /steer")


def clicked_cell(click: dict[str, Any] | None) -> tuple[str, str] | None:
    """The layer view a click on the language x layer heatmap opens: ``(pathname, search)``.

    >>> clicked_cell({"points": [{"x": 3, "y": "fr", "z": 5}]})
    ('/layer/3', '?lang=fr')
    """
    points = (click or {}).get("points") or []
    if not points or points[0].get("x") is None:
        return None
    layer, lang = int(points[0]["x"]), points[0].get("y")
    return f"/layer/{layer}", (f"?lang={lang}" if isinstance(lang, str) else "")


def create_app(data: ExploreData) -> dash.Dash:
    """The explorer of ``data``'s run, ready to ``run()``; the model loads on the first view that needs it."""
    app = dash.Dash(__name__, title="lens-steer explore", update_title=None, suppress_callback_exceptions=True,
                    serve_locally=True)
    app.layout = html.Div([dcc.Location(id="url", refresh=False), views.header(data), html.Div(id="page")],
                          style={"fontFamily": "sans-serif", "margin": "0 2em 2em 2em"})
    _register(app, data)
    return app


def _register(app: dash.Dash, data: ExploreData) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"), State("url", "search"))
    def route(pathname: str | None, search: str | None) -> Any:
        return _shown(page, views.error_message)(data, pathname, search)

    @app.callback(Output("url", "pathname"), Output("url", "search"), Input("layer-heatmap", "clickData"),
                  prevent_initial_call=True)
    def open_cell(click: dict[str, Any] | None) -> Any:
        target = clicked_cell(click)
        return target if target else (no_update, no_update)

    @app.callback(Output("neuron-examples", "children"), Output("neuron-logits", "children"),
                  Input("neuron-key", "data"))
    def neuron_views(key: dict[str, int]) -> Any:
        def show(layer: int, neuron: int) -> Any:
            found = data.model_views(layer, neuron)
            return views.examples(found["top"], data.stats.manifest.get("site", "act")), views.logit_effect(found)
        return _shown(show, lambda m: (views.error_message(m, "neuron-model-error"), ""))(key["layer"], key["neuron"])

    @app.callback(Output("steer-prompt", "value"), Input("steer-fact", "value"), prevent_initial_call=True)
    def fact_prompt(value: str | None) -> Any:
        if not value:
            return no_update
        try:
            source, fact = cloze_fact(data, value)
        except LensSteerError:
            return no_update  # the generation says why
        return fact.prompt[source]

    @app.callback(Output("steer-base", "children"), Output("steer-steered", "children"),
                  Output("steer-answer", "children"), Output("steer-error", "children"),
                  Output("steer-status", "children"), Input("steer-run", "n_clicks"),
                  State("steer-prompt", "value"), State("steer-target", "value"), State("steer-factor", "value"),
                  State("steer-layers", "value"), State("steer-positions", "value"), State("steer-tokens", "value"),
                  State("steer-fact", "value"), prevent_initial_call=True)
    def steer(clicks: int, *fields: Any) -> Any:
        start = time.perf_counter()

        def generate(*values: Any) -> Any:
            records, answers = playground(data, *values)
            return (views.generation(records[0]), [views.generation(r) for r in records[1:]],
                    views.answer_table(records, answers) if answers else "", "")
        shown = _shown(generate, lambda m: ("", "", "", m))(*fields)
        # the run's number: a script (or a test) knows when this click's answer is in
        return (*shown, f"run {clicks}: {'error' if shown[3] else 'done'} in {time.perf_counter() - start:.1f} s")
