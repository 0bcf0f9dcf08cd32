"""Custom artifact types more than one component produces or consumes."""
from tfx.types import artifact


class QuarantinedRows(artifact.Artifact):
  """Rating, movie and user rows that did not become examples, with why.

  The artifact's uri holds ``names.QUARANTINE_ROWS_FILE`` (one JSON object
  per row: file, line, reason, raw, detail) and
  ``names.QUARANTINE_SUMMARY_FILE`` (counts by reason and split).
  """
  # namespace.TypeName: the only form KFP v2 accepts as a schema title.
  TYPE_NAME = 'movielens.QuarantinedRows'
