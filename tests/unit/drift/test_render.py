"""Drift report rendering (mlops_ray.drift.render): table, JSON, PNG and HTML from hand-built evaluations."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import re

import numpy as np
import pytest

from mlops_ray.drift.render import FORMATS, format_table, render, write_html, write_png

# Hostile for HTML (a script tag) and for matplotlib (mathtext that does not parse).
HOSTILE = "<script>$\\frac{$</script>"
BINS = ["(-inf, 18.5)", "[18.5, 25.1)", "[25.1, 40.0)", "[40.0, inf)", "__missing__"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ok green, warn orange, alert red, insufficient grey (the module's STATUS_COLORS, written out here).
COLORS = {"ok": "#2ca02c", "warn": "#ff7f0e", "alert": "#d62728", "insufficient": "#9e9e9e"}


def _feature(name, psi, status, *, kind="numeric", rows=1200, chance=0.05, fixed=None, above=True):
    return {
        "feature": name,
        "kind": kind,
        "psi": psi,
        "chance_threshold": chance,
        "fixed_status": fixed or status,
        "above_chance": above,
        "status": status,
        "rows": rows,
        "bins": list(BINS),
        "reference": [0.1, 0.2, 0.3, 0.3, 0.1],
        "current": [0.0, 0.0, 0.0, 0.0, 0.0] if rows == 0 else [0.05, 0.15, 0.3, 0.4, 0.1],
    }


def _evaluation(**overrides):
    ev = {
        "model": "quickstart-model",
        "model_version": "3",
        "source": "data/current.parquet",
        "window": {"index": 4, "start": 1764250000.0, "end": 1764250060.0, "rows": 1200, "closed": True},
        "rows": 1200,
        "reference_rows": 70000,
        "status": "alert",
        "psi_warn": 0.1,
        "psi_alert": 0.25,
        "alpha": 0.01,
        "min_rows": 500,
        "epsilon": 0.0001,
        "features": [
            _feature("age", 0.3123456, "alert"),
            _feature(HOSTILE, 0.1234, "warn", kind="categorical"),
            _feature("income", 0.0421, "ok", chance=0.0612, fixed="ok"),
            _feature("tenure", 0.0012, "ok"),
        ],
        "prediction": _feature("__prediction__", 0.0789, "ok"),
    }
    ev.update(overrides)
    return ev


def _table_rows(text: str) -> list[str]:
    """The data rows of the table: the lines after the dashed rule."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if re.fullmatch(r"[- ]+", line))
    return lines[rule + 1 :]


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, independently of any imaging library."""
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _pixels(data: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return imread(io.BytesIO(data), format="png")


def _has_color(pixels: np.ndarray, hex_color: str, min_count: int = 3000) -> bool:
    """At least ``min_count`` pixels of ``hex_color``: a bar's area, not anti-aliased text or lines."""
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)]) / 255.0
    close = np.all(np.abs(pixels[..., :3] - rgb) < 0.02, axis=-1)
    return int(close.sum()) >= min_count


@pytest.fixture(scope="module")
def png_bytes(tmp_path_factory):
    """One full report PNG, drawn once for the module (drawing takes a few hundred ms)."""
    path = write_png(_evaluation(), tmp_path_factory.mktemp("png") / "nested" / "dir" / "drift.png")
    return path.read_bytes()


# ------------------------------------------------------------------ table
def test_table_one_row_per_feature_in_psi_order_with_numbers_and_statuses():
    ev = _evaluation()
    ev["features"] = [ev["features"][i] for i in (2, 0, 3, 1)]  # shuffled: the table sorts by PSI
    text = format_table(ev)
    rows = _table_rows(text)
    assert len(rows) == 5  # four features and the prediction
    assert [r.split()[0] for r in rows] == ["age", HOSTILE, "income", "tenure", "prediction"]
    assert rows[0].split() == ["age", "numeric", "1200", "0.3123", "0.0500", "alert"]
    assert rows[1].endswith("categorical  1200  0.1234  0.0500  warn")
    assert rows[2].split() == ["income", "numeric", "1200", "0.0421", "0.0612", "ok"]
    assert rows[4].split() == ["prediction", "numeric", "1200", "0.0789", "0.0500", "ok"]
    # Header: model, version, window, rows, status, thresholds.
    header = "\n".join(text.splitlines()[:3])
    for part in ("quickstart-model", "v3", "window 4", "1200 rows", "70000 reference rows", "ALERT"):
        assert part in header
    assert "warn 0.1" in header and "alert 0.25" in header and "alpha 0.01" in header
    assert "insufficient" not in text


def test_table_columns_are_aligned():
    rows = _table_rows(format_table(_evaluation()))
    # The PSI column ends at the same offset on every row (right-aligned numbers).
    ends = {m.end() for r in rows for m in [re.search(r"\d\.\d{4}(?=\s+\d\.\d{4})", r)]}
    assert len(ends) == 1


def test_table_without_prediction_and_with_nan_psi():
    ev = _evaluation(prediction=None)
    ev["features"][0]["psi"] = float("nan")
    rows = _table_rows(format_table(ev))
    assert len(rows) == 4
    assert not any(r.startswith("prediction") for r in rows)
    assert rows[-1].split()[0] == "age" and "n/a" in rows[-1]  # no PSI: listed last, shown as n/a


def test_table_says_when_psi_alone_would_flag_but_the_shift_is_within_chance():
    ev = _evaluation()
    ev["features"][2].update(fixed_status="warn", above_chance=False, status="ok")
    row = next(r for r in _table_rows(format_table(ev)) if r.startswith("income"))
    assert "ok" in row and "within chance" in row


def test_table_insufficient_says_nothing_is_judged():
    features = [_feature("age", 0.0, "insufficient", rows=120), _feature("income", 0.0, "insufficient", rows=120)]
    ev = _evaluation(status="insufficient", rows=120, features=features, prediction=None)
    text = format_table(ev)
    assert "nothing is judged below min_rows" in text
    assert "120 rows" in text and "500" in text
    assert [r.split()[-1] for r in _table_rows(text)] == ["insufficient", "insufficient"]
    # Overall status alone (no per-feature entries yet) is enough for the message.
    empty = format_table(_evaluation(status="insufficient", rows=0, features=[], prediction=None))
    assert "nothing is judged below min_rows" in empty and "(no features)" in empty


def test_table_keeps_a_hostile_name_on_one_line():
    ev = _evaluation(features=[_feature("bad\nname\x1b[31m", 0.2, "warn")], prediction=None)
    rows = _table_rows(format_table(ev))
    assert len(rows) == 1 and "\x1b" not in rows[0]


# ------------------------------------------------------------------ json
def test_json_round_trips_and_has_no_nan():
    ev = _evaluation()
    ev["features"][1]["psi"] = float("nan")
    ev["features"][2]["chance_threshold"] = float("inf")
    ev["features"][3]["psi"] = np.float64("nan")
    ev["prediction"]["reference"] = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    original = copy.deepcopy(ev)
    text = render(ev, "json", None)
    assert "NaN" not in text and "Infinity" not in text
    back = json.loads(text)
    assert back["features"][1]["psi"] is None
    assert back["features"][2]["chance_threshold"] is None
    assert back["features"][3]["psi"] is None
    assert back["prediction"]["reference"] == [0.2] * 5
    assert back["features"][0] == original["features"][0]
    assert back["window"] == original["window"] and back["status"] == "alert"
    assert math.isnan(ev["features"][1]["psi"])  # the input is not modified


# ------------------------------------------------------------------ png
def test_png_is_a_real_image_of_plausible_size(png_bytes):
    assert png_bytes[:8] == PNG_MAGIC
    assert 10_000 < len(png_bytes) < 2_000_000
    width, height = _png_size(png_bytes)
    assert width == 1000  # 10 in at 100 dpi
    assert 500 <= height <= 1000  # bar panel plus the per-bin panels
    assert _pixels(png_bytes).shape[:2] == (height, width)


def test_png_bars_are_coloured_by_status(png_bytes):
    pixels = _pixels(png_bytes)
    for status in ("ok", "warn", "alert"):
        assert _has_color(pixels, COLORS[status]), status
    assert not _has_color(pixels, COLORS["insufficient"])


def test_png_without_rows_has_no_bin_panels_and_grey_bars(tmp_path):
    features = [_feature("age", float("nan"), "insufficient", rows=0), _feature("x", 0.0, "insufficient", rows=0)]
    ev = _evaluation(status="insufficient", rows=0, features=features, prediction=None, window=None, model=None)
    data = write_png(ev, tmp_path / "empty.png").read_bytes()
    width, height = _png_size(data)
    assert width == 1000 and height < 400  # the bar panel alone
    pixels = _pixels(data)
    # Zero-width bars draw nothing, so give one a PSI to see its colour.
    assert not _has_color(pixels, COLORS["alert"])
    ev["features"][1]["psi"] = 0.2
    assert _has_color(_pixels(write_png(ev, tmp_path / "grey.png").read_bytes()), COLORS["insufficient"])


def test_png_leaves_no_pyplot_figure_open(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    write_png(_evaluation(features=[_feature("age", 0.3, "alert")], prediction=None), tmp_path / "a.png")
    assert plt.get_fignums() == before


# ------------------------------------------------------------------ html
def test_html_escapes_names_and_embeds_the_png(tmp_path, png_bytes):
    png_path = tmp_path / "given.png"
    png_path.write_bytes(png_bytes)
    path = write_html(_evaluation(), tmp_path / "out" / "report.html", png_path=png_path)
    page = path.read_text(encoding="utf-8")
    assert "<script>" not in page.lower()
    assert "&lt;script&gt;$\\frac{$&lt;/script&gt;" in page
    assert page.count("<tr>") == 6  # header + four features + prediction
    assert "quickstart-model" in page and "ALERT" in page
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match is not None
    assert base64.b64decode(match.group(1)) == png_bytes
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no external assets


def test_html_draws_its_own_png_when_none_is_given(tmp_path):
    ev = _evaluation(model="<b>m</b>", features=[_feature("age", 0.3, "alert")], prediction=None)
    page = write_html(ev, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<b>m</b>" not in page and "&lt;b&gt;m&lt;/b&gt;" in page
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1)
    assert base64.b64decode(encoded)[:8] == PNG_MAGIC


# ------------------------------------------------------------------ dispatch
def test_render_dispatches_each_format(tmp_path):
    ev = _evaluation(features=[_feature("age", 0.3, "alert", rows=0)], prediction=None)
    assert FORMATS == ("table", "json", "png", "html")
    assert render(ev, "table", None) == format_table(ev)
    assert json.loads(render(ev, "json", tmp_path / "ignored.json"))["model"] == "quickstart-model"
    png = render(ev, "png", tmp_path / "a" / "r.png")
    assert isinstance(png, str) and png == str(tmp_path / "a" / "r.png")
    assert (tmp_path / "a" / "r.png").read_bytes()[:8] == PNG_MAGIC
    html_out = render(ev, "html", tmp_path / "b" / "r.html")
    assert html_out == str(tmp_path / "b" / "r.html")
    assert "data:image/png;base64," in (tmp_path / "b" / "r.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("fmt", ["png", "html"])
def test_render_file_formats_need_an_output_path(fmt):
    with pytest.raises(ValueError, match=fmt):
        render(_evaluation(), fmt, None)


def test_render_unknown_format_lists_the_formats():
    with pytest.raises(ValueError) as err:
        render(_evaluation(), "csv", None)
    message = str(err.value)
    assert "csv" in message
    assert all(f in message for f in FORMATS)
