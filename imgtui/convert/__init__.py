"""Conversion: any dataset into any store (``local.py``: one process; ``parallel.py``: sharded
stores, local worker processes and Dask). The layer above datasets and backends: it imports both,
neither imports it."""

from .local import check_source_dest, convert, export_png, one_line  # noqa: F401

