"""Default option values the CLI parser shows in ``--help``, kept here so that parsing imports no torch.

The modules that use them (:mod:`lens_steer.compare`) re-export them; the value is written once, here.

>>> DEFAULT_METHODS.split(",")[:2]
['p_max', 'add:mean*best']
"""

from __future__ import annotations

DEFAULT_METHODS = "p_max,add:mean*best,diffmean*best,resid:best,prompt:en,prompt:native"
"""The methods ``lens-steer compare`` measures by default (:class:`lens_steer.compare.CompareConfig`)."""
