"""MovieLensExampleGen's executor: one Beam pipeline from files to splits."""

import dataclasses
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from absl import logging
import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components.movielens_example_gen import history
from components.movielens_example_gen import parsing
from components.movielens_example_gen import sources
from components.movielens_example_gen import spec
from components.movielens_example_gen import split
from components.movielens_example_gen import summary as summary_lib

_MAIN = 'main'
_BAD = 'bad'


def _read_lookup(path: str, file_name: str, parse_line):
  """Parses all of u.item or u.user: one (table, rows_read), and BadRows."""
  numbered = list(parsing.read_numbered_lines(path))
  table, bad_rows = parsing.parse_lookup_file(file_name, numbered, parse_line)
  yield table, len(numbered)
  for row in bad_rows:
    yield beam.pvalue.TaggedOutput(_BAD, row)


def _parse_rating(numbered_line: Tuple[int, str]):
  """Yields the Rating of a u.data line, or its BadRow tagged _BAD."""
  parsed = parsing.parse_rating_line(*numbered_line)
  if isinstance(parsed, parsing.BadRow):
    yield beam.pvalue.TaggedOutput(_BAD, parsed)
  else:
    yield parsed


def _join(rating: parsing.Rating, movies, users):
  """Yields the rating if its movie and user are known, else a BadRow."""
  bad_row = parsing.check_join(rating, movies, users)
  if bad_row is None:
    yield rating
  else:
    yield beam.pvalue.TaggedOutput(_BAD, bad_row)


def _dedup(pair_and_ratings):
  """Yields the kept rating of a (user, movie) pair and BadRows the rest."""
  _, ratings = pair_and_ratings
  kept, bad_rows = parsing.split_duplicates(list(ratings))
  yield kept
  for row in bad_rows:
    yield beam.pvalue.TaggedOutput(_BAD, row)


# ((rating, history_movie_ids, history_ratings), movie_rating_count,
# movie_rating_mean): history.histories's tuples through history.movie_priors.
_RatingWithHistory = Tuple[Tuple[parsing.Rating, List[bytes], List[float]], int, float]


def _with_history(user_and_ratings):
  """Yields each rating of one user with its point-in-time history."""
  _, ratings = user_and_ratings
  return history.histories(ratings)


def _with_movie_prior(movie_and_rated) -> Iterator[_RatingWithHistory]:
  """Adds each rating's point-in-time movie statistics."""
  _, rated = movie_and_rated
  return history.movie_priors(rated)


def _serialize(rated: _RatingWithHistory, movie_parts, user_parts) -> bytes:
  """Returns the serialized tf.train.Example of a joined rating."""
  (rating, history_movie_ids, history_ratings), count, mean = rated
  return parsing.serialize_example(rating, movie_parts[rating.movie_id],
                                   user_parts[rating.user_id],
                                   history_movie_ids, history_ratings, (count, mean))


def _partition(rated: _RatingWithHistory, num_partitions: int,
               config: split.SplitConfig,
               ts_range: Optional[Tuple[int, int]]) -> int:
  """Returns the index in split.SPLIT_NAMES of a rating's split."""
  del num_partitions
  rating = rated[0][0]
  name = split.assign_split(config, rating.user_id, rating.movie_id,
                            rating.timestamp, ts_range)
  return split.SPLIT_NAMES.index(name)


class _MinMaxFn(beam.CombineFn):
  """(min, max) of numbers; None when there are none."""

  def create_accumulator(self):
    return None

  def add_input(self, accumulator, value):
    if accumulator is None:
      return value, value
    return min(accumulator[0], value), max(accumulator[1], value)

  def merge_accumulators(self, accumulators):
    present = [a for a in accumulators if a is not None]
    if not present:
      return None
    return min(a[0] for a in present), max(a[1] for a in present)

  def extract_output(self, accumulator):
    return accumulator


def _summary_json(unused_element, source: sources.DataSource,
                  config: split.SplitConfig, quarantine_file: str,
                  rows_read, bad_counts, counts_per_split, examples,
                  ts_range) -> str:
  """Returns summary.json's text from the pipeline's counts."""
  del unused_element
  boundaries = None
  if config.kind == split.TIME and ts_range is not None:
    train_cut, eval_cut = split.time_boundaries(config, *ts_range)
    boundaries = {
        'train_end_timestamp': train_cut,
        'eval_end_timestamp': eval_cut
    }
  summary = summary_lib.build_summary(
      source=source.to_dict(),
      rows_read=rows_read,
      bad_counts=bad_counts,
      counts_per_split={
          name: counts_per_split.get(name, 0) for name in split.SPLIT_NAMES
      },
      examples=examples,
      timestamp_range=ts_range,
      split_config=dataclasses.asdict(config),
      split_boundaries=boundaries,
      quarantine_file=quarantine_file)
  return json.dumps(summary, indent=2, ensure_ascii=False)


@beam.ptransform_fn
def _MovieLensToExamples(  # pylint: disable=invalid-name
    pipeline: beam.Pipeline, source: sources.DataSource,
    config: split.SplitConfig, split_uris: Dict[str, str],
    quarantine_file: str, summary_file: str) -> None:
  """Reads, validates, joins, dedups, adds history, splits; writes it all.

  Args:
    pipeline: the Beam pipeline (a PBegin).
    source: where u.data, u.item and u.user are.
    config: how to split.
    split_uris: split name to the directory its TFRecords go to.
    quarantine_file: path of quarantine.jsonl.
    summary_file: path of summary.json.
  """
  bad_parts = []
  rows_read_parts = []
  tables = {}
  example_parts = {}
  for file_name, parse_line, to_part in (
      (parsing.U_ITEM, parsing.parse_movie_line, parsing.movie_example_part),
      (parsing.U_USER, parsing.parse_user_line, parsing.user_example_part)):
    lookup = (
        pipeline
        | f'{file_name}Path' >> beam.Create([source.file(file_name)])
        | f'Parse[{file_name}]' >> beam.FlatMap(
            _read_lookup, file_name, parse_line).with_outputs(
                _BAD, main=_MAIN))
    table = lookup[_MAIN] | f'Table[{file_name}]' >> beam.Map(lambda t: t[0])
    tables[file_name] = beam.pvalue.AsSingleton(table)
    example_parts[file_name] = beam.pvalue.AsSingleton(
        table
        | f'ExampleParts[{file_name}]' >> beam.Map(
            lambda t, to_part=to_part: {k: to_part(v) for k, v in t.items()}))
    rows_read_parts.append(
        lookup[_MAIN]
        | f'RowsRead[{file_name}]' >> beam.Map(
            lambda t, name=file_name: (name, t[1])))
    bad_parts.append(lookup[_BAD])
  movies, users = tables[parsing.U_ITEM], tables[parsing.U_USER]

  lines = (
      pipeline
      | 'RatingsPath' >> beam.Create([source.file(parsing.U_DATA)])
      | 'ReadRatings' >> beam.FlatMap(parsing.read_numbered_lines))
  rows_read_parts.append(
      lines
      | 'CountRatings' >> beam.combiners.Count.Globally()
      | 'RowsRead[u.data]' >> beam.Map(lambda n: (parsing.U_DATA, n)))
  # No Reshuffle after the read: parsing is cheap, GroupByPair below spreads
  # the work anyway, and on the DirectRunner a Reshuffle here adds about 2 s
  # of CPU to a 14 s run on ML-100K.
  parsed = lines | 'ParseRatings' >> beam.FlatMap(_parse_rating).with_outputs(
      _BAD, main=_MAIN)
  joined = parsed[_MAIN] | 'Join' >> beam.FlatMap(
      _join, movies=movies, users=users).with_outputs(_BAD, main=_MAIN)
  deduped = (
      joined[_MAIN]
      | 'KeyByPair' >> beam.Map(lambda r: ((r.user_id, r.movie_id), r))
      | 'GroupByPair' >> beam.GroupByKey()
      | 'Dedup' >> beam.FlatMap(_dedup).with_outputs(_BAD, main=_MAIN))
  bad_parts.extend([parsed[_BAD], joined[_BAD], deduped[_BAD]])
  valid = deduped[_MAIN]

  ts_range = (
      valid
      | 'Timestamps' >> beam.Map(lambda r: r.timestamp)
      | 'TimestampRange' >> beam.CombineGlobally(_MinMaxFn()))
  ts_range_side = beam.pvalue.AsSingleton(ts_range)
  # Over all valid ratings, whatever their split: a test-period rating sees
  # the user's earlier test-period ratings, as a serving request carries the
  # user's recent ratings; likewise the movie's statistics. Only earlier
  # seconds count (history.py).
  with_history = (
      valid
      | 'KeyByUser' >> beam.Map(lambda r: (r.user_id, r))
      | 'GroupByUser' >> beam.GroupByKey()
      | 'History' >> beam.FlatMap(_with_history)
      | 'KeyByMovie' >> beam.Map(lambda rated: (rated[0].movie_id, rated))
      | 'GroupByMovie' >> beam.GroupByKey()
      | 'MoviePrior' >> beam.FlatMap(_with_movie_prior))
  partitions = with_history | 'Split' >> beam.Partition(
      _partition, len(split.SPLIT_NAMES), config=config,
      ts_range=ts_range_side)
  split_counts = []
  for index, name in enumerate(split.SPLIT_NAMES):
    serialized = partitions[index] | f'ToExample[{name}]' >> beam.Map(
        _serialize,
        movie_parts=example_parts[parsing.U_ITEM],
        user_parts=example_parts[parsing.U_USER])
    _ = serialized | f'Write[{name}]' >> beam.io.WriteToTFRecord(
        os.path.join(split_uris[name],
                     write_split.DEFAULT_TF_RECORD_FILE_NAME),
        file_name_suffix='.gz')
    split_counts.append(
        serialized
        | f'Count[{name}]' >> beam.combiners.Count.Globally()
        | f'Named[{name}]' >> beam.Map(lambda n, name=name: (name, n)))

  bad = tuple(bad_parts) | 'AllBad' >> beam.Flatten()
  _ = (
      bad
      | 'BadToJson' >> beam.Map(parsing.BadRow.to_json)
      | 'WriteQuarantine' >> beam.io.WriteToText(
          quarantine_file, num_shards=1, shard_name_template=''))
  bad_counts = (
      bad
      | 'FileAndReason' >> beam.Map(lambda r: (r.file, r.reason))
      | 'CountBad' >> beam.combiners.Count.PerElement())
  examples = (
      bad
      | 'KeyByReason' >> beam.Map(lambda r: ((r.file, r.reason), r))
      | 'FirstLines' >> beam.combiners.Top.SmallestPerKey(
          summary_lib.EXAMPLES_PER_REASON, key=lambda r: r.line)
      | 'Unkey' >> beam.FlatMap(lambda kv: kv[1]))
  _ = (
      pipeline
      | 'SummarySeed' >> beam.Create([None])
      | 'Summarize' >> beam.Map(
          _summary_json,
          source=source,
          config=config,
          quarantine_file=quarantine_file,
          rows_read=beam.pvalue.AsDict(
              tuple(rows_read_parts) | 'AllRowsRead' >> beam.Flatten()),
          bad_counts=beam.pvalue.AsList(bad_counts),
          counts_per_split=beam.pvalue.AsDict(
              tuple(split_counts) | 'AllSplitCounts' >> beam.Flatten()),
          examples=beam.pvalue.AsList(examples),
          ts_range=ts_range_side)
      | 'WriteSummary' >> beam.io.WriteToText(
          summary_file, num_shards=1, shard_name_template=''))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Turns MovieLens 100K into train/eval/test tf.Examples and a quarantine."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    """Runs the Beam pipeline, records its counts and enforces the threshold.

    Args:
      input_dict: empty; the component reads files, not artifacts.
      output_dict: 'examples' (one Examples artifact) and 'quarantine' (one
        QuarantinedRows artifact).
      exec_properties: data_dir, split_config, max_bad_fraction and,
        optionally, data_fingerprint and cache_dir; see the component.

    Raises:
      FileNotFoundError: if data_dir lacks a GroupLens file.
      sources.NoDataSourceError: if data_dir is '' and no source works.
      summary_lib.TooManyBadRowsError: if more than max_bad_fraction of the
        ratings were quarantined, or none were read.
    """
    self._log_startup(input_dict, output_dict, exec_properties)
    config = split.SplitConfig.from_json(
        exec_properties.get(spec.SPLIT_CONFIG_KEY) or '{}')
    max_bad_fraction = exec_properties.get(spec.MAX_BAD_FRACTION_KEY)
    if max_bad_fraction is None:
      max_bad_fraction = spec.DEFAULT_MAX_BAD_FRACTION
    source = sources.resolve_source(
        exec_properties.get(spec.DATA_DIR_KEY) or '',
        exec_properties.get(spec.CACHE_DIR_KEY) or '')
    logging.info(
        'MovieLensExampleGen reads %s source %s (%s); u.data md5 %s%s.',
        source.kind, source.path, source.detail, source.u_data_md5,
        '' if source.is_canonical else ', not the published ML-100K')

    examples = artifact_utils.get_single_instance(
        output_dict[spec.EXAMPLES_KEY])
    quarantine = artifact_utils.get_single_instance(
        output_dict[spec.QUARANTINE_KEY])
    examples.split_names = artifact_utils.encode_split_names(
        list(split.SPLIT_NAMES))
    split_uris = {
        name: artifact_utils.get_split_uri([examples], name)
        for name in split.SPLIT_NAMES
    }
    quarantine_file = os.path.join(quarantine.uri,
                                   summary_lib.QUARANTINE_FILE)
    summary_file = os.path.join(quarantine.uri, summary_lib.SUMMARY_FILE)

    with self._make_beam_pipeline() as pipeline:
      _ = pipeline | 'MovieLensToExamples' >> _MovieLensToExamples(  # pylint: disable=no-value-for-parameter
          source, config, split_uris, quarantine_file, summary_file)

    with tf.io.gfile.GFile(summary_file, 'r') as f:
      summary = json.load(f)
    _record_properties(examples, quarantine, source, summary,
                       exec_properties.get(spec.DATA_FINGERPRINT_KEY))
    logging.info(
        'MovieLensExampleGen read %d ratings, quarantined %d %s, wrote %s; '
        'quarantine in %s.', summary['rows_read'],
        summary['rows_quarantined'], summary['counts_by_reason'],
        summary['counts_per_split'], quarantine_file)
    for name in split.SPLIT_NAMES:
      if not summary['counts_per_split'][name]:
        logging.warning('MovieLensExampleGen wrote no %s examples.', name)
    summary_lib.check_bad_fraction(summary, float(max_bad_fraction),
                                   summary_file)


def _record_properties(examples: types.Artifact, quarantine: types.Artifact,
                       source: sources.DataSource, summary: Dict[str, Any],
                       data_fingerprint: Optional[str]) -> None:
  """Sets what standard ExampleGen sets on its output, plus our counts."""
  examples_utils.set_payload_format(examples,
                                    example_gen_pb2.FORMAT_TF_EXAMPLE)
  examples_utils.set_file_format(
      examples,
      write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
  # What standard ExampleGens record; without it every reader warns and
  # falls back to this same format.
  examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
  # Standard ExampleGen's driver sets span (and the fingerprint); this
  # component has no driver and one span.
  examples.set_int_custom_property(example_gen_utils.SPAN_PROPERTY_NAME, 0)
  if data_fingerprint:
    examples.set_string_custom_property(
        example_gen_utils.FINGERPRINT_PROPERTY_NAME, data_fingerprint)
  for artifact in (examples, quarantine):
    artifact.set_string_custom_property(spec.DATA_SOURCE_PROPERTY,
                                        source.kind)
    artifact.set_string_custom_property(spec.DATA_SOURCE_PATH_PROPERTY,
                                        source.path)
    artifact.set_int_custom_property(spec.ROWS_READ_PROPERTY,
                                     summary['rows_read'])
    artifact.set_int_custom_property(spec.ROWS_QUARANTINED_PROPERTY,
                                     summary['rows_quarantined'])
  for name, count in summary['counts_per_split'].items():
    examples.set_int_custom_property(
        summary_lib.split_property_name(name), count)
