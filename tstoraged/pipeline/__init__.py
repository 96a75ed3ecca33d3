"""The pipeline: sources -> bounded intake -> batcher -> (spool) -> writer -> TStorage."""
