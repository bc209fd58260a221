"""The explorer's four views as Dash components: overview, layer, neuron page and steering playground.

Each view is a function of :class:`~lens_steer.explorer.data.ExploreData` and the page's path; the figures are the
report's own builders (:mod:`lens_steer.plots`). The element ids in :data:`IDS` are stable: tests and users' scripts
find the views' parts by them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dash import dash_table, dcc, html

from lens_steer.explorer.data import ExploreData
from lens_steer.explorer.steering import cloze_fact, cloze_options
from lens_steer.languages import LANGUAGES
from lens_steer.plots import language_label, layer_distribution, overlap_heatmap, probability_distribution
from lens_steer.run import LSS_SUMMARY

IDS = ("layer-heatmap", "layer-table", "neuron-title", "neuron-probability", "neuron-examples", "neuron-logits",
       "steer-prompt", "steer-target", "steer-factor", "steer-run", "steer-base", "steer-steered", "steer-error")
"""The stable element ids (the issue's contract)."""
DEFAULT_PROMPT = "The weather today is"
ERROR_STYLE = {"color": "#b00020", "fontWeight": "bold", "whiteSpace": "pre-wrap"}
TABLE_STYLE = dict(style_table={"overflowX": "auto"}, style_cell={"fontFamily": "monospace", "fontSize": 13,
                                                                 "padding": "2px 8px"},
                   style_header={"fontWeight": "bold"})


def header(data: ExploreData) -> html.Div:
    """The links on every page, and the run."""
    links = [dcc.Link("Overview", href="/"), dcc.Link("Layers", href="/layer/0"), dcc.Link("Steering", href="/steer")]
    return html.Div([html.B("lens-steer explore"), *[html.Span(link, style={"marginLeft": "1.5em"}) for link in links],
                     html.Span(f"{data.run.path} ({data.method}, {len(data.languages)} languages)",
                               style={"marginLeft": "1.5em", "color": "#666"})],
                    style={"padding": "8px 0", "borderBottom": "1px solid #ddd", "marginBottom": "12px"})


def error_message(message: str, element_id: str = "page-error") -> html.Div:
    return html.Div(message, id=element_id, style=ERROR_STYLE)


def overview(data: ExploreData) -> html.Div:
    """The language x layer counts (a click opens the layer, filtered to the language) and the overlap matrix."""
    return html.Div([
        html.P("Click a cell of the heatmap to open that layer's neurons, filtered to the language."),
        dcc.Graph(id="layer-heatmap", figure=layer_distribution(data.neurons), config={"displaylogo": False}),
        dcc.Graph(id="overlap-heatmap", figure=overlap_heatmap(data.neurons, "count"),
                  config={"displaylogo": False}),
    ])


def layer_view(data: ExploreData, layer: int, language: str | None = None) -> html.Div:
    """Every language neuron of ``layer`` in a sortable, filterable table (a link per neuron), and the layer's
    distribution of p."""
    frame = data.layer_table(layer)
    frame.insert(1, "page", [f"[open](/neuron/{layer}/{j})" for j in frame["neuron"]])
    columns = [{"name": c, "id": c, **({"presentation": "markdown"} if c == "page" else {}),
                **({"type": "numeric", "format": {"specifier": ".3f"}} if frame[c].dtype.kind == "f" else {})}
               for c in frame.columns]
    query = f'{{languages}} contains "{language}"' if language in data.languages else ""
    steps = [dcc.Link(f"layer {lay}", href=f"/layer/{lay}", style={"marginRight": "0.8em"})
             for lay in range(data.stats.n_layers)]
    return html.Div([
        html.H2(f"Layer {layer}: {len(frame)} language neurons" + (f" (filtered to {language})" if query else "")),
        html.Div(steps, style={"marginBottom": "8px", "lineHeight": "1.8"}),
        html.P("entropy: LAPE's entropy of the neuron's probabilities normalised over the languages (low ="
               " specific); p_<lang>: activation probability per language; p_max, p_median (and selection, the share"
               " of stability resamples choosing it): for the neuron's first language. Type in a column's header"
               " row to filter (e.g. fr in languages, > 0.5 in a p column); click a header to sort."),
        dash_table.DataTable(id="layer-table", columns=columns, data=frame.to_dict("records"), page_size=20,
                             sort_action="native", filter_action="native", filter_query=query,
                             markdown_options={"link_target": "_self"}, **TABLE_STYLE),
        dcc.Graph(figure=probability_distribution(frame, data.languages, layer), config={"displaylogo": False}),
    ])


def neuron_page(data: ExploreData, layer: int, neuron: int) -> html.Div:
    """The neuron's numbers per language (those of ``lens-steer inspect``); its top tokens and logit effect are
    filled in by a callback (they may need the model)."""
    owners, table = data.profile(layer, neuron)
    rows = [{"language": r.language, "name": LANGUAGES[r.language].name if r.language in LANGUAGES else "",
             "p": f"{r.probability:.3f}", "p_max": f"{r.p_max:.3f}", "p_median": f"{r.p_median:.3f}",
             "mean": f"{r.mean:.4f}", "assigned": "*" if r.assigned else "",
             **({"chosen": f"{r.selection:.0%}"} if "selection" in table else {})} for r in table.itertuples()]
    columns = [{"name": c, "id": c} for c in rows[0]] if rows else []
    return html.Div([
        html.H2(f"Layer {layer}, neuron {neuron}: assigned to {', '.join(owners) or 'no language'} ({data.method})",
                id="neuron-title"),
        html.Div([dcc.Link("previous", href=f"/neuron/{layer}/{max(neuron - 1, 0)}"), " | ",
                  dcc.Link("next", href=f"/neuron/{layer}/{neuron + 1}"), " | ",
                  dcc.Link(f"layer {layer}", href=f"/layer/{layer}")]),
        html.H3("Per language"),
        html.P("p: activation probability (share of tokens where it fires); p_max, p_median: the max and lower"
               " median over the kept sentences of the per-sentence mean value; mean: the token mean of its value;"
               " *: assigned" + ("; chosen: share of stability resamples choosing it" if "selection" in table
                                  else "")),
        dash_table.DataTable(id="neuron-probability", columns=columns, data=rows, **TABLE_STYLE),
        dcc.Store(id="neuron-key", data={"layer": layer, "neuron": neuron}),
        dcc.Loading(html.Div([html.H3("Top activating tokens in context"), html.Div(id="neuron-examples"),
                              html.H3("Direct logit effect"), html.Div(id="neuron-logits")])),
    ])


def examples(top: dict[str, Sequence[dict[str, Any]]], site: str) -> list[Any]:
    """Per language, the tokens with the highest neuron value, the token highlighted in its context."""
    value = "act_fn(gate)" if site == "act" else "hook_post"
    out: list[Any] = [html.P(f"value: {value}; context: up to 4 tokens either side, from the run's corpus")]
    for code, hits in top.items():
        lines = [html.Div([html.Code(f"{h['value']:8.3f}  "), html.Span(h["left"][-60:]),
                           html.Mark(h["token"], style={"fontWeight": "bold"}), html.Span(h["right"][:60])],
                          style={"whiteSpace": "pre-wrap"}) for h in hits]
        out += [html.H4(language_label(code)), html.Div(lines or "no tokens")]
    return out


def logit_effect(views: dict[str, Any]) -> list[Any]:
    """The output tokens the neuron's output weight promotes and suppresses most, each with its detected language."""
    def table(rows: Sequence[dict[str, Any]], element_id: str) -> dash_table.DataTable:
        data = [{"token": repr(r["token"]), "logit effect": f"{r['logit']:+.3f}", "language": r["language"] or "??"}
                for r in rows]
        return dash_table.DataTable(id=element_id, columns=[{"name": c, "id": c} for c in ("token", "logit effect",
                                                                                           "language")],
                                    data=data, **TABLE_STYLE)

    return [html.P("W_out[neuron] scaled by the norms after it (post-MLP where the model has one, final) and"
                   " unembedded, less its mean over the vocabulary: the logits one unit of the neuron's value adds"
                   " relative to the average token, before the final norm's division by the residual's RMS;"
                   " language: the detector's guess for the token alone (?? = none)"),
            html.Div([html.Div([html.H4("promoted"), table(views["promoted"], "neuron-promoted")],
                               style={"flex": 1, "marginRight": "2em"}),
                      html.Div([html.H4("suppressed"), table(views["suppressed"], "neuron-suppressed")],
                               style={"flex": 1})], style={"display": "flex"})]


def steer_view(data: ExploreData, query: dict[str, str]) -> html.Div:
    """The playground: prompt, target, factors (up to 3), layers, positions; fields start from the page's query
    (``/steer?prompt=...&target=fr&factor=p_max``: a shareable setting)."""
    targets, _ = data.neurons.targets()
    options = cloze_options(data)
    tokens = query.get("tokens", "")
    fact_prompt = None
    if query.get("fact") in {o["value"] for o in options}:
        source, fact = cloze_fact(data, query["fact"])
        fact_prompt = fact.prompt[source]
    default_factor = "best" if data.run.has(LSS_SUMMARY) else "p_max"

    def field(label: str, component: Any) -> html.Div:
        return html.Div([html.Label(label, style={"display": "block", "fontWeight": "bold"}), component],
                        style={"marginRight": "1.5em", "marginBottom": "8px"})

    inputs = html.Div([
        field("target language", dcc.Input(id="steer-target", value=query.get("target", targets[0] if targets else ""),
                                           list="steer-languages", debounce=False, style={"width": "6em"})),
        html.Datalist(id="steer-languages", children=[html.Option(value=c, label=language_label(c))
                                                      for c in data.languages]),
        field("factors (up to 3, comma-separated; best: the run's choice)",
              dcc.Input(id="steer-factor", value=query.get("factor", default_factor), style={"width": "22em"})),
        field("layers", dcc.Input(id="steer-layers", value=query.get("layers", "all"), style={"width": "7em"})),
        field("positions", dcc.Input(id="steer-positions", value=query.get("positions", "all"),
                                     style={"width": "7em"})),
        field("new tokens", dcc.Input(id="steer-tokens", type="number", min=1, max=200,
                                      value=int(tokens) if tokens.isdigit() else data.config.max_new_tokens,
                                      style={"width": "5em"})),
    ], style={"display": "flex", "flexWrap": "wrap"})
    return html.Div([
        html.H2("Steering playground"),
        field("cloze fact (optional: its prompt, and the probability of the target's answer token by token)",
              dcc.Dropdown(id="steer-fact", options=options, value=query.get("fact"),
                           placeholder="none", style={"width": "60em"})),
        field("prompt", dcc.Textarea(id="steer-prompt", value=query.get("prompt") or fact_prompt or DEFAULT_PROMPT,
                                     style={"width": "60em", "height": "4em"})),
        inputs,
        html.Button("Generate", id="steer-run", n_clicks=0),
        html.Span(id="steer-status", style={"marginLeft": "1em", "color": "#666"}),
        dcc.Loading(html.Div([html.Div(id="steer-error", style=ERROR_STYLE),
                              html.Div([html.Div(id="steer-base", style={"flex": 1, "marginRight": "2em"}),
                                        html.Div(id="steer-steered", style={"flex": 2})],
                                       style={"display": "flex", "marginTop": "12px"}),
                              html.Div(id="steer-answer")])),
    ])


def generation(record: dict[str, Any]) -> html.Div:
    """One continuation: its label, detected language (and whether it is the target's) and text."""
    label = f"{record['target']} {record['factor']}" if record["steered"] else "unsteered"
    hit = "" if not record["steered"] else (" target" if record["match_strict"] else
                                            " target (lenient)" if record["match_lenient"] else " miss")
    return html.Div([html.H4(f"{label}: {record['detected'] or '??'}{hit}" + (" (empty)" if record["empty"] else ""),
                             className="steer-label"),
                     html.Pre(record["text"], className="steer-text", style={"whiteSpace": "pre-wrap"})])


def answer_table(records: Sequence[dict[str, Any]], answers: Sequence[Sequence[tuple[str, float]]]) -> list[Any]:
    """The probability of each token of the target's answer, unsteered and per factor, and of the whole answer."""
    rows = []
    for record, tokens in zip(records, answers):
        row = {"setting": f"{record['target']} {record['factor']}" if record["steered"] else "unsteered"}
        whole = 1.0
        for i, (token, p) in enumerate(tokens):
            row[f"{i + 1}: {token!r}"] = f"{p:.4f}"
            whole *= p
        rows.append({**row, "answer": f"{whole:.3g}"})
    columns = [{"name": c, "id": c} for c in rows[0]] if rows else []
    return [html.H4("The target language's answer, token by token"),
            html.P("p of each answer token given the prompt and the answer's tokens before it (the cloze's"
                   " separator first, tokenised with the prompt as LSS scores it); answer: their product"),
            dash_table.DataTable(id="steer-answer-table", columns=columns, data=rows, **TABLE_STYLE)]
