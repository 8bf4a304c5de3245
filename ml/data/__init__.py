"""Data stages: ingest -> validate -> split."""
