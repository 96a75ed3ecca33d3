"""The mapping shared by all sources: named fields -> TStorage key, capture time and payload."""
