"""A Plotly chart that a live page updates in place.

`st.plotly_chart` gives a chart a new identity whenever its figure changes (its element id hashes the
figure), so the browser throws the chart away and builds it again at every refresh of a live run: a
new plot, a new React subtree, the page's theme applied again, for each of the six charts every
second. Zoom, pan and an open hover label go with it. This chart keeps one Plotly plot per key and
hands it each new figure (`Plotly.react`), which redraws only what changed, and keeps what the
person zoomed to (`uirevision`) until the figure's axes change meaning.

Plotly's script is the one the plotly package ships, served by the app itself: nothing is fetched
from elsewhere, and it loads once per page.
"""

from __future__ import annotations

import json
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit as st
from streamlit.components import v1 as components_v1

PLOTLY_DIR = Path(plotly.__file__).parent / "package_data"  # the plotly package's own plotly.min.js

JS = r"""
const plotly = (src) => {
  window.__contrastPlotly = window.__contrastPlotly || new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error("could not load " + src));
    document.head.appendChild(script);
  });
  return window.__contrastPlotly;
};

// The page's theme (Streamlit's CSS variables) over the figure's own layout, as st.plotly_chart draws a
// figure: bold title on the left, faded ticks, horizontal grid lines only, no background.
const rgba = (colour, alpha) => {
  const probe = document.createElement("span");
  probe.style.color = colour;
  document.body.appendChild(probe);
  const [r, g, b] = getComputedStyle(probe).color.match(/[\d.]+/g);
  probe.remove();
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
};

const themed = (layout, style) => {
  const text = style.getPropertyValue("--st-text-color").trim() || "#31333F";
  const family = style.getPropertyValue("--st-font").trim() || "sans-serif";
  const faded = rgba(text, 0.6), grid = rgba(text, 0.1);
  const out = Object.assign({paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)"}, layout);
  out.font = Object.assign({family: family, color: faded}, layout.font);
  const title = layout.title || {};
  out.title = Object.assign({x: 0, xref: "container", xanchor: "left", pad: {l: 4}}, title,
                            {font: Object.assign({color: text, weight: 600}, title.font)});
  out.legend = Object.assign({}, layout.legend, {font: Object.assign({color: text}, (layout.legend || {}).font)});
  out.hoverlabel = Object.assign({font: {family: family}}, layout.hoverlabel);
  for (const key of new Set(["xaxis", "yaxis", ...Object.keys(out).filter((k) => /^[xy]axis\d*$/.test(k))])) {
    const x = key.startsWith("x");
    out[key] = Object.assign({showgrid: !x, gridcolor: grid, zeroline: false, showline: false, automargin: true},
                             out[key]);
  }
  return out;
};

export default function (component) {
  const { parentElement } = component;
  let data = component.data;
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) data = JSON.parse(new TextDecoder().decode(data));
  else if (typeof data === "string") data = JSON.parse(data);
  let plot = parentElement.querySelector(".contrast-live-chart");
  if (!plot) {
    plot = document.createElement("div");
    plot.className = "contrast-live-chart";
    parentElement.appendChild(plot);
  }
  const purge = () => { window.Plotly && window.Plotly.purge(plot); };  // on unmount: its resize listener too
  plot.__next = data;  // the newest figure: drawn once the one before it is
  if (plot.__drawing) return purge;
  plot.__drawing = true;
  const draw = async () => {
    const Plotly = await plotly(data.src);
    if (plot.__failed) plot.textContent = "";  // the message of a draw that failed before
    plot.__failed = false;
    while (plot.__next) {
      const { figure, config } = plot.__next;
      plot.__next = null;
      const layout = themed(figure.layout || {}, getComputedStyle(plot));
      await Plotly.react(plot, figure.data || [], layout, Object.assign({responsive: true}, config));
    }
  };
  draw().catch((error) => {  // said where the chart would be; the library is loaded again at the next refresh
    window.__contrastPlotly = null;
    plot.__failed = true;
    plot.textContent = `This chart could not be drawn: ${error.message}`;
  }).finally(() => { plot.__drawing = false; });
  return purge;
}
"""

CSS = ".contrast-live-chart { width: 100%; }"

_CHART = st.components.v2.component("contrast_live_chart", js=JS, css=CSS, isolate_styles=False)


def live_chart(fig: go.Figure, key: str, revision: str | None = None, config: dict | None = None) -> None:
    """Draws `fig` where a chart of `key` was drawn before, updating it in place.

    `revision`: what the person's zoom and pan belong to; they are kept while it stays the same (e.g. the
    run watched), and dropped when it changes."""
    fig.layout.uirevision = fig.layout.uirevision or revision or key
    # The app serves PLOTLY_DIR at /component/<this module>.plotly/ once this is declared in its runtime.
    served = components_v1.declare_component("plotly", path=str(PLOTLY_DIR)).name
    base = st.get_option("server.baseUrlPath").strip("/")
    src = "/" + "/".join(part for part in (base, "component", served, "plotly.min.js") if part)
    payload = f'{{"figure": {fig.to_json()}, "config": {json.dumps(config or {})}, "src": {json.dumps(src)}}}'
    _CHART(key=key, data=payload.encode(), height=fig.layout.height or "content")
