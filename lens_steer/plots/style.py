"""The look every figure shares (palettes, title, margins, template) and the placeholder figure a builder returns
when a run has nothing to draw, so that one report page looks like one piece."""

from __future__ import annotations

from typing import Any

import plotly.colors
import plotly.graph_objects as go

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu"
CONTROL_COLOUR = "#7f7f7f"
DEFAULT_COLOURS = tuple(plotly.colors.qualitative.Plotly)  # plotly's default colorway, as in the templates


def _style(fig: go.Figure, title: str, **layout: Any) -> go.Figure:
    """Every builder's last step: the title at the left, the white template, the margins and font size, and the
    builder's own ``layout`` (height, width, legend)."""
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), template="plotly_white",
                      margin=dict(l=70, r=30, t=90, b=60), font=dict(size=13), **layout)
    return fig


def _empty(title: str, message: str) -> go.Figure:
    """A short figure that says why there is nothing to draw (``message``), so a report keeps its section."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=16))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, height=300)
