"""The project's contract: names every package agrees on, in modules that import nothing heavy.

- ``contract.names``: signature names, prediction keys, ``k`` and its bound,
  component ids, artifact file names and the metadata path.
- ``transforms.features``: the feature table (roles, dtypes, ranges and
  "unknown" values), which the signatures, the server, the request log and
  the validate command all derive from.

``serving/`` and ``components/`` read these instead of importing ``trainer/``,
so learning a name never loads TensorFlow Transform or TFRS.
"""
