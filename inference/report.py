"""``rig report EVAL_DIR``: a self-contained HTML page for an evaluation.

Reads ``metrics.json`` and the figures ``rig eval --out EVAL_DIR`` wrote and writes ``report.html``
with the figures as files next to it (copied when the report goes to another folder): summary
table (with paper 1 Table 2's real-data figures for reference), the per-depth-bin plot, the
qualitative grid, per-image metrics and extra image sections (e.g. the demo's predictions).
The page needs no network and no JavaScript to read; a small script only marks, for automated
checks, how many images loaded (``data-images-loaded`` on ``<body>``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from rig.core.errors import RigError

# Paper 1 Table 2 (real DFD indoor test set, D3-Net): input -> metrics
PAPER1_TABLE2 = {
    "N2_8": {"rel": 0.157, "rms": 0.546, "delta1": 0.809},
    "N8": {"rel": 0.225, "rms": 0.730, "delta1": 0.602},
}
_METRICS = ("rel", "log10", "rms", "rmslog", "delta1", "delta2", "delta3")
_LABELS = {"rel": "rel", "log10": "log10", "rms": "rms (m)", "rmslog": "rmslog", "delta1": "δ<1.25",
           "delta2": "δ<1.25²", "delta3": "δ<1.25³"}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.6rem 0 1.4rem}th,td{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.9rem}
.grid{display:flex;flex-wrap:wrap;gap:.8rem}.grid figure{flex:1 1 260px;margin:0}
details{margin:1rem 0}code{background:#f5f5f5;padding:0 .2rem}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
});
"""


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "–"
    return f"{v * 100:.1f}%" if key.startswith("delta") else f"{v:.3f}"


def _metrics_table(rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str] = _METRICS, cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(_LABELS.get(k, k))}</th>" for k in keys)
    body = []
    for name, m in rows:
        cells = "".join(f"<td data-metric='{k}'>{_fmt(k, m.get(k))}</td>" for k in keys)
        body.append(f"<tr><td class='l'>{html.escape(name)}</td>{cells}</tr>")
    return (f"<table class='{cls}'><thead><tr><th class='l'></th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _place(src: Path, out_dir: Path, used: set[str]) -> str:
    """Copy ``src`` into ``out_dir`` unless it is already there, under a name not yet used by this
    page (inputs from different folders may share a name); returns the relative name."""
    src = Path(src)
    name = src.name
    if src.resolve() != (out_dir / name).resolve():
        i = 1
        while name in used:
            name = f"{src.stem}_{i}{src.suffix}"
            i += 1
        shutil.copy2(src, out_dir / name)
    used.add(name)
    return name


def depth_range_text(settings: dict[str, Any]) -> str:
    """The evaluated depth range in words: the --min/--max-depth filter and the ground truth seen."""
    lo, hi, seen = settings.get("min_depth_m"), settings.get("max_depth_m"), settings.get("gt_range_m")
    seen_txt = f"ground truth {seen[0]:.2f}–{seen[1]:.2f} m" if seen else "ground truth range not recorded"
    if lo is None and hi is None:
        return f"all depths ({seen_txt})"
    lo_txt = f"{lo:g} m" if lo is not None else "0 m"
    hi_txt = f"{hi:g} m" if hi is not None else "∞"
    return f"depths {lo_txt} to {hi_txt} ({seen_txt})"


def build_report(eval_dir: Path, out_dir: Path | None = None, title: str | None = None,
                 extra_sections: Sequence[dict[str, Any]] = ()) -> Path:
    """Write ``report.html`` for the evaluation in ``eval_dir``; returns its path.

    ``extra_sections``: dicts with ``title``, optional ``text`` and ``images`` — a list of
    (path, caption) — shown after the evaluation (paths are copied next to the page).
    """
    eval_dir = Path(eval_dir)
    mpath = eval_dir / "metrics.json"
    if mpath.is_file():
        try:
            res = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise RigError(f"{mpath}: invalid JSON ({e.msg} at line {e.lineno})") from None
    elif extra_sections:
        res = {}
    else:
        raise RigError(f"{eval_dir}: no metrics.json; run `rig eval ... --out {eval_dir}` first")
    out_dir = Path(out_dir) if out_dir else eval_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    title = title or f"Depth evaluation: {Path(res.get('model', 'model')).name}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if res:
        parts.append(f"<p class='sub'>{html.escape(res.get('arch', ''))} · input {html.escape(str(res.get('input')))}"
                     f" · {html.escape(str(res.get('split')))} · {res.get('n_images')} images · data "
                     f"<code>{html.escape(str(res.get('data')))}</code></p>")
        rows = [("this model (mean over images)", res.get("metrics", {})),
                ("this model (pooled over pixels)", res.get("pooled", {}))]
        ref = PAPER1_TABLE2.get(str(res.get("input")))
        if ref:
            rows.append((f"paper 1 Table 2, D3-Net, {res.get('input')} (real test set)", ref))
        parts.append("<h2>Metrics</h2>" + _metrics_table(rows, cls="summary"))
        st = res.get("settings", {})
        parts.append(f"<p>Pixels with ground truth; {html.escape(depth_range_text(st))}; Eigen crop {'on' if st.get('crop') else 'off'}; "
                     f"MC-dropout samples {st.get('mc_samples', 0)}. rel, log10, rmslog: unitless; rms in "
                     "metres.</p>")
        tr = res.get("training") or {}
        if tr:
            parts.append("<p>Model: " + ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}"
                                                   for k, v in tr.items()) + "</p>")
    figs = res.get("figures", {})
    if "depth_bins" in figs and (eval_dir / figs["depth_bins"]).is_file():
        name = _place(eval_dir / figs["depth_bins"], out_dir, used)
        parts.append(f"<h2>Error per depth</h2><figure><img src='{html.escape(name)}' alt='RMS per depth bin'>"
                     "<figcaption>RMS error per ground-truth depth bin (top) and the distribution of training "
                     "and evaluated depths (bottom), as paper 1 Fig. 8.</figcaption></figure>")
    unc = res.get("uncertainty")
    if unc:
        src = html.escape(str(res.get("settings", {}).get("uncertainty", "")))
        parts.append(f"<h2>Uncertainty</h2><p>σ from the {src}: mean per-image Spearman correlation of σ with "
                     f"|error| {unc['spearman_std_err']:.2f}; AUSE ratio (1 = random order, 0 = oracle) "
                     f"{unc['ause_ratio']:.2f} per image, {unc['pooled_ause_ratio']:.2f} pooled.</p>")
        if "sparsification" in figs and (eval_dir / figs["sparsification"]).is_file():
            name = _place(eval_dir / figs["sparsification"], out_dir, used)
            parts.append(f"<figure><img src='{html.escape(name)}' alt='sparsification curves'><figcaption>Sparsification: "
                         "mean absolute error of the pixels kept after removing the most uncertain ones, "
                         "against the oracle (removing the largest true errors first) and a random order."
                         "</figcaption></figure>")
    if "grid" in figs and (eval_dir / figs["grid"]).is_file():
        name = _place(eval_dir / figs["grid"], out_dir, used)
        parts.append(f"<h2>Examples</h2><figure><img src='{html.escape(name)}' alt='qualitative grid'>"
                     "<figcaption>RGB input, ground truth, prediction, absolute error and MC-dropout "
                     "uncertainty (standard deviation).</figcaption></figure>")
    for sec in extra_sections:
        parts.append(f"<h2>{html.escape(sec['title'])}</h2>")
        if sec.get("text"):
            parts.append(f"<p>{html.escape(sec['text'])}</p>")
        figs_html = []
        for path, caption in sec.get("images", []):
            name = _place(Path(path), out_dir, used)
            figs_html.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append(f"<div class='grid'>{''.join(figs_html)}</div>")
    per = res.get("per_image") or []
    if per:
        parts.append(f"<details><summary>Per-image metrics ({len(per)})</summary>"
                     + _metrics_table([(p["id"], p) for p in per], cls="per-image") + "</details>")
    made = _dt.datetime.now().isoformat(timespec="seconds")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style>"
            f"<script>{_SCRIPT}</script></head><body>{''.join(parts)}"
            f"<p class='sub'>Made by <code>rig report</code> on {made} from <code>{html.escape(str(eval_dir))}</code>."
            "</p></body></html>")
    from rig.core.imageio import atomic_write_bytes

    path = out_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path
