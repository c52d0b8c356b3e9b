"""Render a drift evaluation (PSI per feature) for people: a terminal table, JSON, a PNG, an HTML page.

Pure: no Ray, no MLflow. matplotlib is imported lazily (Agg backend) by the functions that draw,
so importing this module stays cheap.

The evaluation dict (built by the drift monitor) has ``model``, ``model_version``, ``source``,
``window`` (``index``/``start``/``end``/``rows``/``closed`` or None), ``rows``, ``reference_rows``,
``status`` (``ok``/``warn``/``alert``/``insufficient``), ``psi_warn``, ``psi_alert``, ``alpha``,
``min_rows``, ``epsilon``, ``features`` (one entry per feature: ``feature``, ``kind``, ``psi``,
``chance_threshold``, ``fixed_status``, ``above_chance``, ``status``, ``rows``, ``bins``,
``reference``, ``current``) and ``prediction`` (an entry like a feature's, or None).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMATS = ("table", "json", "png", "html")

STATUS_COLORS = {"ok": "#2ca02c", "warn": "#ff7f0e", "alert": "#d62728", "insufficient": "#9e9e9e"}
_UNKNOWN_COLOR = "#9e9e9e"
PREDICTION_LABEL = "prediction"
MAX_DETAIL_FEATURES = 3
DPI = 100
_MAX_TICK_LABEL = 24


# ------------------------------------------------------------------ small helpers
def _finite(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing, not a number or not finite."""
    if x is None or isinstance(x, bool):
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _num(x: Any, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals; ``n/a`` when it is missing or not finite."""
    f = _finite(x)
    return "n/a" if f is None else f"{f:.{digits}f}"


def _short(x: Any) -> str:
    """A threshold as written (0.1, 0.25, 0.01), ``n/a`` when missing."""
    f = _finite(x)
    return "n/a" if f is None else f"{f:g}"


def _int(x: Any) -> str:
    f = _finite(x)
    return "n/a" if f is None else str(int(f))


def _printable(s: Any) -> str:
    """``str(s)`` with control characters (newlines, escapes) shown as Python escapes, so one
    value stays on one line of a terminal table."""
    text = "" if s is None else str(s)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _psi_key(entry: dict) -> float:
    """Sort key: largest PSI first; missing / non-finite PSI last."""
    f = _finite(entry.get("psi"))
    return -f if f is not None else math.inf


def _features(ev: dict) -> list[dict]:
    """The feature entries, largest PSI first (stable, so an already sorted list keeps its order)."""
    return sorted(ev.get("features") or [], key=_psi_key)


def _entries(ev: dict) -> list[tuple[str, dict]]:
    """(label, entry) for every feature, largest PSI first, then the prediction if present."""
    out = [(_printable(f.get("feature")), f) for f in _features(ev)]
    if ev.get("prediction"):
        out.append((PREDICTION_LABEL, ev["prediction"]))
    return out


def _time(t: Any) -> str | None:
    f = _finite(t)
    if f is None:
        return None
    try:
        return datetime.fromtimestamp(f, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None


def _window_text(window: dict | None) -> str | None:
    """``window 4 (2025-11-27 13:26:40 to 13:27:40 UTC, closed)``, or None without a window."""
    if not window:
        return None
    parts = []
    start, end = _time(window.get("start")), _time(window.get("end"))
    if start and end:
        if end[:10] == start[:10]:  # same day: the end's time is enough
            end = end[11:]
        parts.append(f"{start} to {end} UTC")
    elif start:
        parts.append(f"from {start} UTC")
    if "closed" in window:
        parts.append("closed" if window.get("closed") else "open")
    index = window.get("index")
    head = f"window {_printable(index)}" if index is not None else "window"
    return f"{head} ({', '.join(parts)})" if parts else head


def _status_text(entry: dict) -> str:
    """The entry's status; when PSI alone would say more but the shift is within chance, say so."""
    status = _printable(entry.get("status") or "n/a")
    fixed = entry.get("fixed_status")
    if fixed and fixed != entry.get("status") and entry.get("above_chance") is False:
        return f"{status} (PSI says {_printable(fixed)}, within chance)"
    return status


def _model_text(ev: dict) -> str:
    model = ev.get("model")
    version = ev.get("model_version")
    text = f"model {_printable(model)}" if model is not None else "no model"
    if version is not None:
        text += f" v{_printable(version)}"
    return text


def _rows_text(ev: dict) -> str:
    return f"{_int(ev.get('rows'))} rows vs {_int(ev.get('reference_rows'))} reference rows"


def _summary(ev: dict) -> str:
    """One line: model, version, window, rows, overall status."""
    parts = [_model_text(ev)]
    window = _window_text(ev.get("window"))
    if window:
        parts.append(window)
    parts.append(_rows_text(ev))
    parts.append(f"status {_printable(ev.get('status') or 'n/a').upper()}")
    return " | ".join(parts)


def _thresholds_text(ev: dict) -> str:
    return (
        f"thresholds: PSI warn {_short(ev.get('psi_warn'))}, alert {_short(ev.get('psi_alert'))}; "
        f"alpha {_short(ev.get('alpha'))}; min rows {_int(ev.get('min_rows'))}"
    )


def _insufficient_text(ev: dict) -> str | None:
    """The note for too few rows: for the whole evaluation, or for the features that have too few."""
    min_rows = _int(ev.get("min_rows"))
    if ev.get("status") == "insufficient":
        return (
            f"insufficient data: {_int(ev.get('rows'))} rows, fewer than min_rows {min_rows}; "
            f"nothing is judged below min_rows"
        )
    if any(e.get("status") == "insufficient" for _, e in _entries(ev)):
        return f"insufficient: fewer than min_rows {min_rows} rows; nothing is judged below min_rows"
    return None


# ------------------------------------------------------------------ table
_COLUMNS = ("feature", "kind", "rows", "PSI", "chance", "status")
_RIGHT = {"rows", "PSI", "chance"}


def format_table(ev: dict) -> str:
    """A plain-text table for a terminal.

    Two header lines (model, version, window, rows, overall status; then the PSI warn/alert
    thresholds, alpha and min rows), an optional source line, then one row per feature, largest
    PSI first (feature, kind, rows, PSI and chance threshold with 4 decimals, status), then the
    prediction's row labelled ``prediction`` if there is one. With too few rows it says that
    nothing is judged below min_rows. Columns are aligned with spaces; control characters in
    names are escaped so each row stays on one line.
    """
    lines = [f"drift: {_summary(ev)}", _thresholds_text(ev)]
    if ev.get("source") is not None:
        lines.append(f"source: {_printable(ev['source'])}")
    note = _insufficient_text(ev)
    if note:
        lines.append(note)
    lines.append("")

    rows = [
        (
            label,
            _printable(e.get("kind") or ""),
            _int(e.get("rows")),
            _num(e.get("psi")),
            _num(e.get("chance_threshold")),
            _status_text(e),
        )
        for label, e in _entries(ev)
    ]
    if not rows:
        lines.append("(no features)")
        return "\n".join(lines)
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(_COLUMNS)]

    def line(cells) -> str:
        out = [cell.rjust(w) if col in _RIGHT else cell.ljust(w) for col, cell, w in zip(_COLUMNS, cells, widths)]
        return "  ".join(out).rstrip()

    lines.append(line(_COLUMNS))
    lines.append(line(["-" * w for w in widths]))
    lines.extend(line(r) for r in rows)
    return "\n".join(lines)


# ------------------------------------------------------------------ json
def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: non-finite floats
    become None, tuples become lists, numpy arrays and scalars become Python values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # ndarray, np.float64, ...
        return json_safe(obj.tolist())
    return obj


def format_json(ev: dict) -> str:
    """The evaluation as indented JSON, non-finite numbers as ``null``."""
    return json.dumps(json_safe(ev), indent=2, allow_nan=False)


# ------------------------------------------------------------------ png
def _mpl(text: Any, limit: int | None = None) -> str:
    """Text safe for matplotlib: printable, ``$`` escaped (no mathtext), optionally shortened."""
    s = _printable(text)
    if limit is not None and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _figure(ev: dict):
    """The drift figure (a ``matplotlib.figure.Figure``, not registered with pyplot)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    entries = _entries(ev)
    detail = [f for f in _features(ev) if (_finite(f.get("rows")) or 0) > 0 and f.get("bins")]
    detail = detail[:MAX_DETAIL_FEATURES]

    top_h = max(2.4, 0.4 * len(entries) + 1.4)
    bottom_h = 3.6 if detail else 0.0
    fig = Figure(figsize=(10, top_h + bottom_h), dpi=DPI, layout="constrained")
    head = f"Data drift: {_model_text(ev)} | status {_printable(ev.get('status') or 'n/a').upper()}"
    rest = " | ".join(t for t in (_window_text(ev.get("window")), _rows_text(ev)) if t)
    fig.suptitle(f"{_mpl(head)}\n{_mpl(rest)}", fontsize=10)
    if detail:
        grid = fig.add_gridspec(2, len(detail), height_ratios=[top_h, bottom_h])
        ax = fig.add_subplot(grid[0, :])
    else:
        ax = fig.add_subplot(1, 1, 1)

    # Top: PSI per feature, largest at the top.
    warn, alert = _finite(ev.get("psi_warn")), _finite(ev.get("psi_alert"))
    psis = [_finite(e.get("psi")) for _, e in entries]
    chances = [_finite(e.get("chance_threshold")) for _, e in entries]
    xmax = max([v for v in (*psis, *chances, warn, alert) if v is not None] or [1.0])
    ys = list(range(len(entries)))
    if entries:
        ax.barh(
            ys,
            [p or 0.0 for p in psis],
            color=[STATUS_COLORS.get(e.get("status"), _UNKNOWN_COLOR) for _, e in entries],
            height=0.7,
        )
        for y, p in zip(ys, psis):
            ax.text((p or 0.0) + xmax * 0.01, y, "n/a" if p is None else f"{p:.4f}", va="center", fontsize=8)
        for y, c in zip(ys, chances):
            if c is not None:
                ax.vlines(c, y - 0.42, y + 0.42, colors="black", linestyles="dotted", linewidth=1.5)
        ax.set_yticks(ys, [_mpl(label, _MAX_TICK_LABEL) for label, _ in entries], fontsize=8)
        ax.set_ylim(len(entries) - 0.5, -0.5)
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no features", transform=ax.transAxes, ha="center", va="center")
    for value, name in ((warn, "warn"), (alert, "alert")):
        if value is not None:
            ax.axvline(value, color=STATUS_COLORS[name], linestyle="--", linewidth=1, label=f"{name} {value:g}")
    ax.plot([], [], color="black", linestyle="dotted", label="chance threshold")
    ax.set_xlim(0, xmax * 1.15)
    ax.set_xlabel("PSI")
    ax.legend(loc="lower right", fontsize=8)

    # Bottom: reference vs current proportions per bin for the worst features.
    for i, f in enumerate(detail):
        dax = fig.add_subplot(grid[1, i])
        bins = [_mpl(b, 16) for b in f.get("bins") or []]
        n = len(bins)
        ref = [_finite(v) or 0.0 for v in (f.get("reference") or [])][:n]
        cur = [_finite(v) or 0.0 for v in (f.get("current") or [])][:n]
        ref += [0.0] * (n - len(ref))
        cur += [0.0] * (n - len(cur))
        xs = range(n)
        dax.bar([x - 0.2 for x in xs], ref, width=0.4, color="#1f77b4", label="reference")
        dax.bar(
            [x + 0.2 for x in xs],
            cur,
            width=0.4,
            color=STATUS_COLORS.get(f.get("status"), _UNKNOWN_COLOR),
            label="current",
        )
        dax.set_xticks(list(xs), bins, rotation=45, ha="right", fontsize=7)
        dax.tick_params(axis="y", labelsize=7)
        dax.set_title(f"{_mpl(f.get('feature'), 24)}: PSI {_num(f.get('psi'))} ({_mpl(f.get('status'))})", fontsize=9)
        if i == 0:
            dax.set_ylabel("proportion", fontsize=8)
            dax.legend(fontsize=7)
    return fig


def _png_bytes(ev: dict) -> bytes:
    buf = io.BytesIO()
    _figure(ev).savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def write_png(ev: dict, path) -> Path:
    """Draw the evaluation into one PNG at ``path`` (parent folders are created); return the path.

    Top: a horizontal bar per feature (and the prediction) with its PSI, coloured by status (ok
    green, warn orange, alert red, insufficient grey), dashed lines at the warn and alert
    thresholds and a dotted mark per bar at its chance threshold. Below: for the up to three
    features with the largest PSI that have rows, reference vs current proportions per bin.
    The figure is a bare ``Figure`` (never registered with pyplot), so nothing is left open.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(ev))
    return path


# ------------------------------------------------------------------ html
_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.num { text-align: right; font-family: monospace; }
td.ok { background: #dff0d8; } td.warn { background: #fde3c8; }
td.alert { background: #f6d0d0; } td.insufficient { background: #e6e6e6; }
img { max-width: 100%; }
.meta { color: #555; }
"""


def write_html(ev: dict, path, png_path=None) -> Path:
    """Write a self-contained HTML page for the evaluation at ``path``; return the path.

    Title, summary line, thresholds, the figure embedded as a base64 ``data:`` URI (read from
    ``png_path``, or drawn in memory when it is None) and a table of the features and the
    prediction. Every string from the evaluation is HTML-escaped. No external assets.
    """
    esc = lambda s: html.escape(_printable(s), quote=True)
    png = Path(png_path).read_bytes() if png_path is not None else _png_bytes(ev)
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    rows = []
    for label, e in _entries(ev):
        status = str(e.get("status") or "")
        css = status if status in STATUS_COLORS else ""
        rows.append(
            "<tr>"
            f"<td>{esc(label)}</td><td>{esc(e.get('kind') or '')}</td>"
            f'<td class="num">{esc(_int(e.get("rows")))}</td>'
            f'<td class="num">{esc(_num(e.get("psi")))}</td>'
            f'<td class="num">{esc(_num(e.get("chance_threshold")))}</td>'
            f'<td class="{css}">{esc(_status_text(e))}</td>'
            "</tr>"
        )
    meta = [_thresholds_text(ev)]
    if ev.get("source") is not None:
        meta.append(f"source: {_printable(ev['source'])}")
    note = _insufficient_text(ev)
    if note:
        meta.append(note)
    title = f"Data drift: {_model_text(ev)}"
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="summary">{esc(_summary(ev))}</p>
{"".join(f'<p class="meta">{esc(m)}</p>' for m in meta)}
<img alt="PSI per feature" src="{data_uri}">
<table>
<thead><tr>{"".join(f"<th>{esc(c)}</th>" for c in _COLUMNS)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</body>
</html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


# ------------------------------------------------------------------ dispatch
def render(ev: dict, fmt: str, out: Path | None) -> str:
    """Render ``ev`` as ``fmt`` (one of ``FORMATS``) for the CLI.

    ``table`` and ``json`` return the text (``out`` is not used: the caller prints or writes it);
    ``png`` and ``html`` write to ``out`` (required for them) and return the written path as a
    string. Raises ValueError for an unknown format or a missing ``out``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown drift report format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    if fmt == "table":
        return format_table(ev)
    if fmt == "json":
        return format_json(ev)
    if out is None:
        raise ValueError(f"format {fmt!r} writes a file: give an output path")
    written = write_png(ev, out) if fmt == "png" else write_html(ev, out)
    return str(written)
