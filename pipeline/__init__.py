"""Distributed runs on Ray, fsspec storage and the `nst` command line."""
