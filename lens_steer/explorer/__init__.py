"""A live neuron explorer in the browser (Dash): an overview of where the language neurons live, a table per layer,
a shareable page per neuron (``/neuron/L/J``) and a steering playground (``lens-steer explore RUN``; in Jupyter
``ls.explore(run)``).

One idea per module:

* :mod:`~lens_steer.explorer.data`: :class:`ExploreData`, the run's numbers, and the model loaded once behind a lock.
* :mod:`~lens_steer.explorer.steering`: the playground's call (``lens-steer steer``'s, for up to three factors).
* :mod:`~lens_steer.explorer.views`: the four views' layouts and the stable element ids.
* :mod:`~lens_steer.explorer.app`: the Dash app, its routing and callbacks.

Nothing here imports Dash until an app is built, so a missing ``explore`` extra is one line.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lens_steer.configs import LOCAL_HOSTS, ExploreConfig
from lens_steer.errors import LensSteerError
from lens_steer.run import Run

if TYPE_CHECKING:
    import dash

    from lens_steer.explorer.data import ExploreData
    from lens_steer.models import LoadConfig

MISSING_DASH = "the explorer needs Dash: pip install 'lens-steer[explore]'"


def build_app(run: Run | str | Path, config: ExploreConfig | None = None,
              load: LoadConfig | str | None = None) -> tuple[dash.Dash, ExploreData]:
    """The explorer app of ``run`` and the data behind it (read now: a run without neurons fails here)."""
    try:
        import dash  # noqa: F401 - only to say which extra is missing
    except ImportError:
        raise LensSteerError(MISSING_DASH) from None
    # deferred: dash, pandas and torch, once an app is built (the extra's check above comes first)
    from lens_steer.explorer.app import create_app
    from lens_steer.explorer.data import ExploreData

    data = ExploreData(run if isinstance(run, Run) else Run(run), config or ExploreConfig(), load)
    return create_app(data), data


def check_host(host: str) -> None:
    """Warn (once, one line) when the app listens beyond this machine: anyone who reaches it can run the model."""
    if host not in LOCAL_HOSTS:
        warnings.warn(f"--host {host}: the explorer is reachable from other machines, and whoever reaches it can run"
                      " the model; use 127.0.0.1 unless you mean it", stacklevel=2)


def serve(run: Run | str | Path, config: ExploreConfig | None = None, load: LoadConfig | str | None = None) -> None:
    """Serve the explorer until interrupted (``lens-steer explore``)."""
    config = config or ExploreConfig()
    check_host(config.host)
    app, _ = build_app(run, config, load)
    print(f"lens-steer explore: http://{config.host}:{config.port}/ (Ctrl-C stops it)", flush=True)
    app.run(host=config.host, port=config.port, debug=False)


def explore(run: Run | str | Path, config: ExploreConfig | None = None, load: LoadConfig | str | None = None, *,
            jupyter_mode: str = "inline", **run_options: Any) -> dash.Dash:
    """Show the explorer of ``run`` in a Jupyter cell (Dash's notebook mode: ``jupyter_mode`` "inline", "tab",
    "external"); returns the app. Outside a notebook, ``lens-steer explore RUN`` serves the same app."""
    config = config or ExploreConfig()
    check_host(config.host)
    app, _ = build_app(run, config, load)
    app.run(host=config.host, port=config.port, debug=False, jupyter_mode=jupyter_mode, **run_options)
    return app


__all__ = ["ExploreConfig", "build_app", "check_host", "explore", "serve"]
