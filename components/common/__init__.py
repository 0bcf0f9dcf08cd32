"""What several components share: artifact types (``artifacts``) and split readers (``splits``)."""
