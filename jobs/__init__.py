"""Content x style job manifests in Parquet: build, validate, read. Needs no Ray."""
