"""The quarantine summary and the max_bad_fraction check.

The executor's Beam pipeline writes summary.json next to quarantine.jsonl;
after the pipeline the executor reads it back, copies its counts onto the
examples artifact and calls `check_bad_fraction`.
"""

import collections
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from components.movielens_example_gen import parsing
from contract import names

QUARANTINE_FILE = names.QUARANTINE_ROWS_FILE
SUMMARY_FILE = names.QUARANTINE_SUMMARY_FILE
# How many quarantined rows per (file, reason) summary.json and errors show.
EXAMPLES_PER_REASON = 3

Summary = Dict[str, Any]


class TooManyBadRowsError(ValueError):
  """More ratings were quarantined than max_bad_fraction allows."""


def _file_counts(rows_read: int,
                 counts: Mapping[str, int]) -> Dict[str, Any]:
  return {
      'rows_read': rows_read,
      'rows_quarantined': sum(counts.values()),
      'counts_by_reason': dict(sorted(counts.items())),
  }


def build_summary(
    source: Mapping[str, str],
    rows_read: Mapping[str, int],
    bad_counts: Iterable[Tuple[Tuple[str, str], int]],
    counts_per_split: Mapping[str, int],
    examples: Iterable[parsing.BadRow],
    timestamp_range: Optional[Tuple[int, int]],
    split_config: Mapping[str, Any],
    split_boundaries: Optional[Mapping[str, float]],
    quarantine_file: str,
) -> Summary:
  """Builds the JSON-ready contents of summary.json.

  Top-level rows_read, rows_quarantined and counts_by_reason are about
  ratings (u.data lines); lookup_files holds the same for u.item and u.user.
  A quarantined u.item or u.user line also quarantines its ratings, as
  unknown_movie or unknown_user.

  Args:
    source: DataSource.to_dict() of the source read.
    rows_read: lines read per file name.
    bad_counts: ((file, reason), count) pairs.
    counts_per_split: examples written per split name.
    examples: some quarantined rows to show; sorted here by file and line.
    timestamp_range: (min, max) timestamp of the valid ratings, or None if
      there are none.
    split_config: SplitConfig as a dict.
    split_boundaries: for a time split, the last train and last eval
      timestamp; None for a random split.
    quarantine_file: path of quarantine.jsonl.

  Returns:
    The summary dict.
  """
  by_file = collections.defaultdict(dict)
  for (file_name, reason), count in bad_counts:
    by_file[file_name][reason] = count
  ratings = _file_counts(rows_read.get(parsing.U_DATA, 0),
                         by_file[parsing.U_DATA])
  return {
      'source': dict(source),
      'rows_read': ratings['rows_read'],
      'rows_quarantined': ratings['rows_quarantined'],
      'counts_by_reason': ratings['counts_by_reason'],
      'counts_per_split': dict(counts_per_split),
      'lookup_files': {
          name: _file_counts(rows_read.get(name, 0), by_file[name])
          for name in (parsing.U_ITEM, parsing.U_USER)
      },
      'examples': [
          row._asdict()
          for row in sorted(examples, key=lambda r: (r.file, r.line))
      ],
      'timestamp_range': list(timestamp_range) if timestamp_range else None,
      'split_config': dict(split_config),
      'split_boundaries': (
          dict(split_boundaries) if split_boundaries is not None else None),
      'quarantine_file': quarantine_file,
  }


def _format_counts(counts: Mapping[str, int]) -> str:
  return ', '.join(f'{reason} {count:,}' for reason, count in counts.items())


def check_bad_fraction(summary: Summary, max_bad_fraction: float,
                       summary_file: str) -> None:
  """Raises if too many ratings were quarantined, saying what to do.

  Args:
    summary: as built by build_summary.
    max_bad_fraction: the most rows_quarantined / rows_read allowed.
    summary_file: path of summary.json, named in the error.

  Raises:
    TooManyBadRowsError: if no ratings were read, or the quarantined
      fraction is above max_bad_fraction. The message gives the counts by
      reason, a few rows with file:line, where the quarantine is, and what
      to do.
  """
  rows_read = summary['rows_read']
  rows_quarantined = summary['rows_quarantined']
  source_path = summary['source']['path']
  if rows_read == 0:
    raise TooManyBadRowsError(
        f'MovieLensExampleGen read no ratings from {source_path}/'
        f'{parsing.U_DATA}. Point data_dir at a non-empty ml-100k directory.')
  fraction = rows_quarantined / rows_read
  if fraction <= max_bad_fraction:
    return
  lines = [
      f'MovieLensExampleGen quarantined {rows_quarantined:,} of '
      f'{rows_read:,} ratings ({fraction:.2%}) from {source_path}, more than '
      f'max_bad_fraction={max_bad_fraction:g}.',
      f'By reason: {_format_counts(summary["counts_by_reason"])}.',
  ]
  for name, counts in summary['lookup_files'].items():
    if counts['rows_quarantined']:
      lines.append(
          f'{name}: {counts["rows_quarantined"]:,} of {counts["rows_read"]:,} '
          f'rows quarantined ({_format_counts(counts["counts_by_reason"])}); '
          'ratings of those ids count as unknown_movie or unknown_user.')
  lines.append('Examples:')
  lines.extend(_format_example(row) for row in summary['examples'])
  lines.extend([
      f'Every quarantined row is in {summary["quarantine_file"]}, the counts '
      f'in {summary_file}.',
      'Fix the source data, or, if these rows are expected, raise '
      f'max_bad_fraction (now {max_bad_fraction:g}) to at least '
      f'{fraction:.4f}.',
  ])
  raise TooManyBadRowsError('\n'.join(lines))


def _format_example(row: Mapping[str, Any]) -> str:
  return (f'  {row["file"]}:{row["line"]} {row["reason"]}: {row["detail"]}: '
          f'{row["raw"]!r}')


def split_property_name(split_name: str) -> str:
  """Returns the examples artifact's custom property for a split's count."""
  return f'rows_{split_name}'

