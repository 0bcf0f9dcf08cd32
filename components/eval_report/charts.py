"""Inline SVG charts for the evaluation report: no script, no network.

Each chart is a string of SVG that a browser draws where it stands in the
page. Every mark carries a ``<title>`` (the browser's tooltip) with its exact
figures, and the chart an ``aria-label`` saying what it shows.
"""
import html
import math
from typing import List, Optional, Sequence, Tuple

BLUE = '#1565c0'
GREY = '#9e9e9e'
RED = '#c62828'
GREEN = '#2e7d32'
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _esc(text) -> str:
  return html.escape(str(text), quote=True)


def _svg(width: float, height: float, label: str, body: str, chart: str) -> str:
  return (f'<svg class="chart" data-chart="{_esc(chart)}" width="{width:.0f}" height="{height:.0f}" '
          f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{_esc(label)}" '
          f'xmlns="http://www.w3.org/2000/svg">{body}</svg>')


def slice_bars(rows: Sequence[Tuple[str, Optional[float], Optional[float], float]], reference: Optional[float],
               label: str, width: int = 560) -> str:
  """Horizontal bars, one per slice, against the overall value.

  Args:
    rows: (slice name, candidate value, baseline value or None, example count).
    reference: the overall slice's value, drawn as a dashed line.
    label: what the bars measure, e.g. 'RMSE'.
    width: of the whole chart in pixels.

  Returns:
    SVG. A bar is red when the slice is worse (higher) than the overall value,
    the baseline's value is a black tick.
  """
  name_w, value_w, row_h = 170, 110, 18
  plot_w = width - name_w - value_w
  values = [v for _, c, b, _ in rows for v in (c, b) if v is not None and math.isfinite(v)]
  top = max(values + [reference or 0.0, 1e-9]) * 1.08
  x = lambda v: name_w + plot_w * max(v, 0.0) / top  # noqa: E731
  parts = []
  for i, (name, value, baseline, count) in enumerate(rows):
    y = i * row_h
    parts.append(f'<text x="{name_w - 6}" y="{y + 13}" text-anchor="end" {_FONT}>{_esc(name)}</text>')
    if value is None or not math.isfinite(value):
      parts.append(f'<text x="{name_w + 4}" y="{y + 13}" {_FONT}>no value</text>')
      continue
    worse = reference is not None and value > reference
    parts.append(f'<rect x="{name_w}" y="{y + 3}" width="{x(value) - name_w:.1f}" height="{row_h - 6}" '
                 f'fill="{RED if worse else BLUE}" fill-opacity="0.8"><title>{_esc(name)}: {label} '
                 f'{value:.4f} over {count:,.0f} examples</title></rect>')
    if baseline is not None and math.isfinite(baseline):
      parts.append(f'<line x1="{x(baseline):.1f}" y1="{y + 1}" x2="{x(baseline):.1f}" y2="{y + row_h - 1}" '
                   f'stroke="#000" stroke-width="2"><title>baseline {baseline:.4f}</title></line>')
    parts.append(f'<text x="{width - value_w + 6}" y="{y + 13}" {_FONT}>{value:.4f} (n={count:,.0f})</text>')
  height = len(rows) * row_h + 22
  if reference is not None:
    parts.append(f'<line x1="{x(reference):.1f}" y1="0" x2="{x(reference):.1f}" y2="{height - 18}" stroke="#555" '
                 f'stroke-dasharray="4 3"><title>overall {reference:.4f}</title></line>')
    parts.append(f'<text x="{x(reference):.1f}" y="{height - 5}" text-anchor="middle" {_FONT}>'
                 f'overall {reference:.3f}</text>')
  return _svg(width, height, f'{label} by slice; dashed line: overall', ''.join(parts), 'slice-bars')


def _axes(x0: float, y0: float, w: float, h: float, lo: float, hi: float, ticks: Sequence[float],
          x_label: str, y_label: str, y_ticks: Sequence[Tuple[float, str]] = ()) -> List[str]:
  """Frame, x ticks on [lo, hi], given y ticks (fraction of h, text) and the axis titles."""
  parts = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#bbb"/>']
  for t in ticks:
    px = x0 + w * (t - lo) / (hi - lo)
    parts.append(f'<line x1="{px:.1f}" y1="{y0 + h}" x2="{px:.1f}" y2="{y0 + h + 4}" stroke="#555"/>'
                 f'<text x="{px:.1f}" y="{y0 + h + 16}" text-anchor="middle" {_FONT}>{t:g}</text>')
  for frac, text in y_ticks:
    py = y0 + h - h * frac
    parts.append(f'<line x1="{x0 - 4}" y1="{py:.1f}" x2="{x0}" y2="{py:.1f}" stroke="#555"/>'
                 f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" {_FONT}>{_esc(text)}</text>')
  parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle" {_FONT}>{_esc(x_label)}</text>')
  parts.append(f'<text x="12" y="{y0 + h / 2}" text-anchor="middle" transform="rotate(-90 12 {y0 + h / 2})" '
               f'{_FONT}>{_esc(y_label)}</text>')
  return parts


def distributions(buckets: Sequence[Tuple[float, float, float]], labels: Sequence[Tuple[float, float]],
                  lo: float, hi: float, width: int = 560, height: int = 260) -> str:
  """Predicted against actual ratings, as densities on one rating axis.

  Args:
    buckets: (lower, upper, share of examples) of the predictions, upper >
      lower; infinite edges are clipped to [lo, hi].
    labels: (rating, share of examples) of the actual ratings, one star wide.
    lo, hi: the rating axis.
    width, height: of the chart in pixels.

  Returns:
    SVG. Shares are divided by the bar's width, so a quarter-star bucket and
    a one-star bar are comparable: both areas sum to 1.
  """
  x0, y0, w, h = 56, 26, width - 70, height - 72
  bars = [(max(a, lo), min(b, hi), s) for a, b, s in buckets if s > 0]
  stars = [(r - 0.5, r + 0.5, s) for r, s in labels if s > 0]
  densities = [s / (b - a) for a, b, s in bars + stars if b > a]
  top = max(densities + [1e-9]) * 1.1
  px = lambda v: x0 + w * (v - lo) / (hi - lo)  # noqa: E731
  py = lambda d: y0 + h - h * d / top  # noqa: E731
  parts = _axes(x0, y0, w, h, lo, hi, [lo + 0.5 + i for i in range(int(hi - lo))], 'rating',
                'share of examples per star', [(t / top, f'{t:.2f}') for t in _nice_ticks(top)])
  for a, b, s in stars:
    d = s / (b - a)
    parts.append(f'<rect class="actual" x="{px(a) + 1:.1f}" y="{py(d):.1f}" width="{px(b) - px(a) - 2:.1f}" '
                 f'height="{y0 + h - py(d):.1f}" fill="{GREY}" fill-opacity="0.35" stroke="#616161">'
                 f'<title>actual {(a + b) / 2:g} stars: {s:.1%} of ratings</title></rect>')
  for a, b, s in bars:
    if b <= a:
      continue
    d = s / (b - a)
    parts.append(f'<rect class="predicted" x="{px(a) + 0.5:.1f}" y="{py(d):.1f}" width="{px(b) - px(a) - 1:.1f}" '
                 f'height="{y0 + h - py(d):.1f}" fill="{BLUE}" fill-opacity="0.75">'
                 f'<title>predicted {a:g} to {b:g}: {s:.1%} of predictions</title></rect>')
  # The legend sits above the plot, where no bar can hide it.
  parts.append(f'<rect x="{x0}" y="4" width="12" height="10" fill="{GREY}" fill-opacity="0.35" stroke="#616161"/>'
               f'<text x="{x0 + 16}" y="13" {_FONT}>actual rating</text>'
               f'<rect x="{x0 + 110}" y="4" width="12" height="10" fill="{BLUE}" fill-opacity="0.75"/>'
               f'<text x="{x0 + 126}" y="13" {_FONT}>predicted (quarter-star buckets)</text>')
  return _svg(width, height, 'Distribution of predicted and actual ratings', ''.join(parts), 'distributions')


def calibration(points: Sequence[Tuple[float, float, float]], lo: float, hi: float,
                width: int = 420, height: int = 420) -> str:
  """Mean actual rating against mean prediction, one circle per prediction bucket.

  Args:
    points: (mean prediction, mean label, example count) per non-empty bucket.
    lo, hi: both axes.
    width, height: of the chart in pixels.

  Returns:
    SVG: the diagonal is perfect calibration; a circle's area is its count.
  """
  x0, y0, w, h = 56, 10, width - 70, height - 56
  px = lambda v: x0 + w * (min(max(v, lo), hi) - lo) / (hi - lo)  # noqa: E731
  py = lambda v: y0 + h - h * (min(max(v, lo), hi) - lo) / (hi - lo)  # noqa: E731
  ticks = [lo + 0.5 + i for i in range(int(hi - lo))]
  parts = _axes(x0, y0, w, h, lo, hi, ticks, 'mean predicted rating (bucket)', 'mean actual rating',
                [((t - lo) / (hi - lo), f'{t:g}') for t in ticks])
  parts.append(f'<line x1="{px(lo)}" y1="{py(lo)}" x2="{px(hi)}" y2="{py(hi)}" stroke="{GREY}" '
               f'stroke-dasharray="4 3"><title>perfect calibration</title></line>')
  biggest = max([c for _, _, c in points] + [1e-9])
  for prediction, label, count in points:
    r = 2 + 12 * math.sqrt(count / biggest)
    parts.append(f'<circle class="bucket" cx="{px(prediction):.1f}" cy="{py(label):.1f}" r="{r:.1f}" '
                 f'fill="{BLUE}" fill-opacity="0.55" stroke="{BLUE}"><title>mean prediction {prediction:.3f}, '
                 f'mean actual {label:.3f}, {count:,.0f} examples</title></circle>')
  return _svg(width, height, 'Calibration: mean actual rating by predicted rating', ''.join(parts), 'calibration')


def _nice_ticks(top: float) -> List[float]:
  """Three to six round tick values in (0, top]."""
  step = 10 ** math.floor(math.log10(top / 4)) if top > 0 else 1.0
  for factor in (1, 2, 5, 10):
    if top / (step * factor) <= 6:
      step *= factor
      break
  return [step * i for i in range(1, int(top / step) + 1)]
