"""The data validation report: report.json for machines, report.html for people.

The HTML page leads with a verdict, then draws every drift, skew and OOV
figure as a bar against its threshold, so a reader sees at a glance what is
close to tripping, then lists the findings and the quarantine counts.
"""
import dataclasses
import html
import json
import os
from typing import Any, Dict, Optional, Sequence

import tensorflow as tf

from components.data_validator.checks import Finding, Measurement

REPORT_JSON = 'report.json'
REPORT_HTML = 'report.html'
_BAR_WIDTH = 360


def to_dict(title: str, findings: Sequence[Finding], measurements: Sequence[Measurement],
            context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  return {
      'title': title,
      'passed': not findings,
      'findings': [dataclasses.asdict(x) for x in findings],
      'measurements': [dict(dataclasses.asdict(m), failed=m.failed) for m in measurements],
      'context': context or {},
  }


def _bar(m: Measurement) -> str:
  """One SVG row: the value's bar, the threshold as a line, both on one scale."""
  scale = max(m.value, m.threshold or 0.0, 1e-9) * 1.15
  value_w = _BAR_WIDTH * m.value / scale
  colour = '#c62828' if m.failed else ('#2e7d32' if m.threshold is not None else '#9e9e9e')
  threshold = ''
  if m.threshold is not None:
    x = _BAR_WIDTH * m.threshold / scale
    threshold = (f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="18" stroke="#000" stroke-width="2"/>'
                 f'<title>threshold {m.threshold:.4f}</title>')
  limit = f' / {m.threshold:.4f}' if m.threshold is not None else ' (no threshold)'
  return (f'<tr><td>{html.escape(m.split)}</td><td>{html.escape(m.feature)}</td><td>{html.escape(m.kind)}</td>'
          f'<td>{html.escape(m.metric)}</td><td><svg width="{_BAR_WIDTH}" height="18" role="img" '
          f'aria-label="{m.value:.4f}{limit}"><rect x="0" y="3" width="{_BAR_WIDTH}" height="12" fill="#eee"/>'
          f'<rect x="0" y="3" width="{value_w:.1f}" height="12" fill="{colour}"/>{threshold}</svg></td>'
          f'<td class="num">{m.value:.4f}{limit}</td></tr>')


def _count(n: int) -> str:
  return f'{n} anomaly' if n == 1 else f'{n} anomalies'


def to_html(report: Dict[str, Any]) -> str:
  measurements = [Measurement(**{k: v for k, v in m.items() if k != 'failed'}) for m in report['measurements']]
  verdict = ('<p class="pass">PASSED: no anomalies.</p>' if report['passed'] else
             f'<p class="fail">FAILED: {_count(len(report["findings"]))}. Nothing downstream should '
             'use this data until they are fixed or the thresholds are deliberately changed.</p>')
  findings = ''.join(
      f'<tr><td>{html.escape(x["split"])}</td><td>{html.escape(x["feature"])}</td>'
      f'<td>{html.escape(x["kind"])}</td><td>{html.escape(x["description"])}</td></tr>'
      for x in report['findings']) or '<tr><td colspan="4">none</td></tr>'
  context = ''.join(f'<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(json.dumps(v))}</code></td></tr>'
                    for k, v in sorted(report['context'].items()))
  bars = ''.join(_bar(m) for m in sorted(measurements, key=lambda m: (not m.failed, m.split, m.kind, m.feature)))
  return f'''<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report["title"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: middle; }}
.num {{ font-variant-numeric: tabular-nums; }}
.pass {{ color: #2e7d32; font-size: 1.3em; font-weight: bold; }}
.fail {{ color: #c62828; font-size: 1.3em; font-weight: bold; }}
</style></head><body>
<h1>{html.escape(report["title"])}</h1>
{verdict}
<h2>Distances and OOV rates against their thresholds</h2>
<p>Bar: the measured value (red over the threshold, grey where none is set); black line: the threshold.</p>
<table><tr><th>split</th><th>feature</th><th>check</th><th>measure</th><th></th><th>value / threshold</th></tr>
{bars or '<tr><td colspan="6">nothing compared</td></tr>'}</table>
<h2>Findings</h2>
<table><tr><th>split</th><th>feature</th><th>check</th><th>what</th></tr>{findings}</table>
<h2>Context</h2>
<table>{context}</table>
</body></html>
'''


def write(out_dir: str, title: str, findings: Sequence[Finding], measurements: Sequence[Measurement],
          context: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """Writes report.json and report.html into ``out_dir``; returns the report."""
  report = to_dict(title, findings, measurements, context)
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_JSON), 'w') as fh:
    json.dump(report, fh, indent=2, sort_keys=True)
  with tf.io.gfile.GFile(os.path.join(out_dir, REPORT_HTML), 'w') as fh:
    fh.write(to_html(report))
  return report


def summary_text(report: Dict[str, Any]) -> str:
  """A few readable lines for a terminal or an exception message."""
  lines = [f'{report["title"]}: {"PASSED" if report["passed"] else "FAILED"}']
  lines += [f'  - {x["split"]}: {x["feature"]} ({x["kind"]}): {x["description"]}' for x in report['findings']]
  return '\n'.join(lines)
