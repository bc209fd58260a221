"""``python -m lens_steer.harness ARGS``: the harness's command line (``lm_eval ARGS``) with the ``lens_steer`` model
registered, e.g. ``python -m lens_steer.harness run --model lens_steer --model_args run=RUN,target=fr,factor=p_max
--tasks xcopa_id``."""

from __future__ import annotations

import lens_steer.harness  # noqa: F401 - registers the model
from lm_eval.__main__ import cli_evaluate

if __name__ == "__main__":
    cli_evaluate()
