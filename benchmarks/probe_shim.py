"""The shim: ``probes.py --shim ARGS...`` is ``python -m lens_steer.cli ARGS...`` with the model load logged.

It wraps ``lens_steer.models.load_model``, ``Model.__init__`` and ``TransformerBridge.boot_transformers`` to log
to ``$LENS_PROBE_MARKER`` before calling the originals, so whether a refusal came before the weights loaded is
seen whatever the age of the checkout under test. It imports nothing heavy itself (the standard library only), so
a probe that fails in argparse costs what it costs the user.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


MARKER_ENV = "LENS_PROBE_MARKER"


def _log(event: str, **extra: Any) -> None:
    path = os.environ.get(MARKER_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "t": round(time.perf_counter() - _T0, 3), **extra}) + "\n")


_T0 = time.perf_counter()


def _patch_models(module: Any) -> None:
    original = module.load_model

    def load_model(*args: Any, **kwargs: Any) -> Any:
        _log("load_model", spec=str(args[0] if args else kwargs.get("spec", "")))
        model = original(*args, **kwargs)
        _log("loaded")
        return model

    load_model.__wrapped__ = original  # type: ignore[attr-defined]
    module.load_model = load_model
    init = module.Model.__init__

    def model_init(self: Any, *args: Any, **kwargs: Any) -> None:
        _log("Model")
        init(self, *args, **kwargs)

    module.Model.__init__ = model_init


def _patch_bridge(module: Any) -> None:
    bridge = getattr(module, "TransformerBridge", None)
    if bridge is None or not hasattr(bridge, "boot_transformers"):
        return
    boot = bridge.boot_transformers

    def boot_transformers(*args: Any, **kwargs: Any) -> Any:
        _log("boot")
        return boot(*args, **kwargs)

    bridge.boot_transformers = staticmethod(boot_transformers)


PATCHES = {"lens_steer.models": _patch_models, "transformer_lens.model_bridge": _patch_bridge}


def install_hooks() -> None:
    """Patch the modules of :data:`PATCHES` right after they are first executed (a meta-path finder), so whoever
    imports ``load_model`` by name (``from lens_steer.models import load_model``) gets the logging one."""
    import importlib.abc
    import importlib.machinery

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - importlib's signature
            if name not in PATCHES:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader, patch = spec.loader, PATCHES[name]
            exec_module = loader.exec_module

            def patched_exec(module: Any) -> None:
                exec_module(module)
                patch(module)

            loader.exec_module = patched_exec  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())


def shim(argv: list[str]) -> int:
    """Run the CLI on ``argv`` as ``python -m lens_steer.cli`` would, with the hooks installed."""
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]  # benchmarks/ holds bench.py, memory.py, gpu.py...: never shadow an installed module
    install_hooks()
    import lens_steer
    import lens_steer.cli

    _log("start", lens_steer=str(Path(lens_steer.__file__).resolve().parent))
    return lens_steer.cli.main(argv)
