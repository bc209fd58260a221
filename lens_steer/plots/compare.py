"""``compare.csv`` as one picture: every steering method's forcing success against what it costs the source answer,
beside its matched control."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from lens_steer.plots.frames import _as_frame
from lens_steer.plots.style import DEFAULT_COLOURS, _empty, _style


def _joined_labels(points: pd.DataFrame, dx: float, dy: float = 0.05) -> dict[str, str]:
    """Point labels that do not print over each other: methods within ``dx`` and ``dy`` of an earlier one share its
    label ("prompt:en, prompt:native") and show none of their own.

    >>> _joined_labels(pd.DataFrame({"source_damage": [0.1, 0.2, -4.0], "forcing": [0.0, 0.0, 0.6]},
    ...                             index=["prompt:en", "prompt:native", "p_max"]), dx=0.5)
    {'prompt:en': 'prompt:en, prompt:native', 'prompt:native': '', 'p_max': 'p_max'}
    """
    labels: dict[str, str] = {}
    anchors: list[tuple[str, float, float]] = []
    for name, (x, y) in zip(points.index, points.itertuples(index=False)):
        hit = next((a for a, ax, ay in anchors if abs(x - ax) < dx and abs(y - ay) < dy), None)
        if hit is None:
            anchors.append((name, x, y))
            labels[name] = name
        else:
            labels[hit] += f", {name}"
            labels[name] = ""
    return labels


def compare_methods(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> go.Figure:
    """``compare.csv`` as one picture: per method, forcing success (does it make the model write t?) against source
    damage (what it costs the source answer, nats), the method filled, its control hollow in the same colour and
    joined to it by a dotted line; ``none`` (no intervention) as a black cross. Whiskers: the 95% intervals of
    forcing (Wilson over the generations) and source damage (bootstrap over pairs) where ``compare.csv`` has them;
    the hover gives LSS and target wins with theirs.

    >>> rows = [dict(method="none", source_damage=0.0, forcing=0.1), dict(method="p_max", source_damage=-2.0,
    ...         forcing=0.4), dict(method="control:p_max", source_damage=-0.1, forcing=0.1)]
    >>> [t.name for t in compare_methods(rows).data]
    ['none', 'p_max', 'p_max (control)']
    """
    frame = _as_frame(rows)
    if frame.empty or not {"method", "source_damage", "forcing"} <= set(frame):
        return _empty("Forcing success against source damage", "no compare.csv rows")
    frame["method"] = frame["method"].astype(str)
    lo, hi = _damage_span(frame)
    pad = 0.12 * (hi - lo) or 1.0  # room for the labels at both ends (plotly's autorange ignores text)
    fig = go.Figure()
    for _, r in frame[frame["method"] == "none"].iterrows():
        fig.add_trace(_baseline_point(r))
    methods = [m for m in frame["method"] if m != "none" and not re.match(r"control(-iso)?:", m)]
    # a tenth of the x span (0 included) apart, or their labels overlap
    labels = _joined_labels(frame.set_index("method").loc[methods, ["source_damage", "forcing"]],
                            dx=0.1 * (hi - lo) or 0.1)
    for i, m in enumerate(methods):
        colour = DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]
        r = frame[frame["method"] == m].iloc[0]
        fig.add_trace(_method_point(m, r, labels[m], colour, middle=(lo + hi) / 2))
        for prefix in ("control", "control-iso"):  # resid: has both nulls (lens_steer.resid_cov)
            ctrl = frame[frame["method"] == f"{prefix}:{m}"]
            if not ctrl.empty:
                fig.add_trace(_control_link(m, r, ctrl.iloc[0], colour, prefix))
    fig.add_vline(x=0, line_color="#bbb")
    fig.update_xaxes(title_text="source damage: mean change of logp(o_s | x_s) (nats; left = more damage)",
                     range=[lo - pad, hi + pad])
    fig.update_yaxes(title_text="forcing success (outputs detected as the target)", range=[-0.03, 1.03])
    return _style(fig, "Steering methods: forcing success against source damage (hollow: the method's control)",
                  height=520, width=820)


def _damage_span(frame: pd.DataFrame) -> tuple[float, float]:
    """The smallest and largest source damage, 0 always inside: the no-change line is drawn at 0."""
    xs = pd.to_numeric(frame["source_damage"], errors="coerce").dropna()
    return min(float(xs.min()) if len(xs) else 0.0, 0.0), max(float(xs.max()) if len(xs) else 0.0, 0.0)


def _number(r: Mapping[str, Any], k: str) -> bool:
    return k in r and isinstance(r[k], (int, float)) and r[k] == r[k]


def _hover(r: Mapping[str, Any]) -> str:
    """The row's other numbers for a point's hover (those it has and that are not NaN), each with its 95% interval
    where the row has one, and its layer if it intervenes on one.

    >>> _hover(dict(alpha=2.0, lss=0.9, lss_low=0.8, lss_high=0.95, layer="all"))
    'alpha 2, lss 0.9 [0.8, 0.95]'
    """
    parts = [f"{k} {r[k]:.3g}" + (f" [{r[k + '_low']:.3g}, {r[k + '_high']:.3g}]"
                                  if _number(r, k + "_low") and _number(r, k + "_high") else "")
             for k in ("alpha", "lss", "target_wins", "repetition", "udhr_ppl_self") if _number(r, k)]
    layer = r.get("layer")
    return ", ".join(parts + ([f"layer {layer}"] if layer not in (None, "", "-", "all") and layer == layer else []))


def _whiskers(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any] | None:
    """Error bars of ``key`` over the points ``rows`` from their ``<key>_low`` and ``<key>_high`` (95%: Wilson for
    forcing, the bootstrap over pairs for source damage); None when no row has them (an older compare.csv).

    >>> _whiskers([dict(forcing=0.5, forcing_low=0.2, forcing_high=0.7)], "forcing")["arrayminus"]
    [0.3]
    """
    low, high = f"{key}_low", f"{key}_high"
    if not any(_number(r, low) and _number(r, high) for r in rows):
        return None
    up = [max(r[high] - r[key], 0.0) if _number(r, high) else 0.0 for r in rows]
    down = [max(r[key] - r[low], 0.0) if _number(r, low) else 0.0 for r in rows]
    return dict(type="data", symmetric=False, array=[round(v, 12) for v in up],
                arrayminus=[round(v, 12) for v in down], thickness=1.2, width=4)


def _baseline_point(r: Mapping[str, Any]) -> go.Scatter:
    """No intervention (``none``): a black cross, the point every method moves away from."""
    return go.Scatter(x=[r["source_damage"]], y=[r["forcing"]], mode="markers+text", name="none",
                      text=["none"], textposition="bottom center", error_y=_whiskers([r], "forcing"),
                      marker=dict(symbol="x", size=12, color="black"),
                      hovertemplate="no intervention<br>forcing %{y:.2f}<extra></extra>")


def _method_point(m: str, r: Mapping[str, Any], label: str, colour: str, middle: float) -> go.Scatter:
    """One method, filled, with its label (empty when an earlier point's label names it, see
    :func:`_joined_labels`); ``middle`` is the centre of the x range."""
    return go.Scatter(x=[r["source_damage"]], y=[r["forcing"]], mode="markers+text", name=m,
                      text=[label], legendgroup=m, error_x=_whiskers([r], "source_damage"),
                      error_y=_whiskers([r], "forcing"),
                      # a joined label is long: it grows toward the middle of the plot, never off its edge
                      textposition=("top center" if ", " not in label else
                                    "top left" if r["source_damage"] > middle else "top right"),
                      marker=dict(size=13, color=colour, line=dict(width=1, color="white")),
                      hovertemplate=f"{m}<br>damage %{{x:.2f}} nats, forcing %{{y:.2f}}<br>{_hover(r)}"
                                    "<extra></extra>")


def _control_link(m: str, r: Mapping[str, Any], c: Mapping[str, Any], colour: str,
                  prefix: str = "control") -> go.Scatter:
    """The method's control: a hollow marker in the method's colour, joined to the method's point (``r``) by a
    dotted line and sharing its legend entry, so hiding the method hides its control too. The isotropic residual
    null (``control-iso:``) is a hollow diamond."""
    return go.Scatter(x=[r["source_damage"], c["source_damage"]], y=[r["forcing"], c["forcing"]],
                      mode="lines+markers", name=f"{m} (control)", legendgroup=m, showlegend=False,
                      # the control's whiskers only (the method's point has its own): none on the line's start
                      error_x=_control_only(_whiskers([r, c], "source_damage")),
                      error_y=_control_only(_whiskers([r, c], "forcing")),
                      line=dict(color=colour, dash="dot", width=1),
                      marker=dict(size=[0, 11], symbol="diamond-open" if prefix == "control-iso" else "circle-open",
                                  color=colour, line=dict(width=2)),
                      hovertemplate=f"{prefix}:{m}<br>damage %{{x:.2f}} nats, forcing %{{y:.2f}}"
                                    f"<br>{_hover(c)}<extra></extra>")


def _control_only(bars: dict[str, Any] | None) -> dict[str, Any] | None:
    """Whiskers of a (method, control) pair of points with the method's set to 0: drawn once, on the method."""
    if bars is None:
        return None
    return {**bars, "array": [0.0, bars["array"][1]], "arrayminus": [0.0, bars["arrayminus"][1]]}
