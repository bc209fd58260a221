"""lens_steer inside EleutherAI's lm-evaluation-harness (the optional extra ``lens-steer[harness]``).

Importing this package registers the harness model ``lens_steer`` (:class:`~lens_steer.harness.model.LensSteerLM`:
the harness's HF model under a lens_steer intervention); ``import lens_steer`` alone never imports lm_eval.

* :mod:`~lens_steer.harness.model`: the model and its registration.
* :mod:`~lens_steer.harness.cells`: ``lens-steer harness``, the baseline and every (task, target) cell of a run
  (:func:`~lens_steer.harness.cells.harness_for_run`), written as ``RUN/eval_harness.csv``.

``python -m lens_steer.harness ARGS`` is the harness's own command line (``lm_eval ARGS``) with the model registered.
"""

from __future__ import annotations

from lens_steer.errors import LensSteerError

try:
    import lm_eval  # noqa: F401 - the extra's presence, checked once with a one-line answer
except ImportError as exc:  # pragma: no cover - the test environment has the extra; tests fake its absence
    raise LensSteerError("lm-evaluation-harness is not installed; pip install 'lens-steer[harness]'") from exc

from lens_steer.harness.model import LensSteerLM, make_intervention  # noqa: E402 - registers the model
from lens_steer.harness.cells import HarnessResult, harness_for_run, language_of_name  # noqa: E402

__all__ = ["LensSteerLM", "make_intervention", "HarnessResult", "harness_for_run", "language_of_name"]
