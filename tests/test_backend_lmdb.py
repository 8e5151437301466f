"""The lmdb backend passes the shared conformance suite (tests/backend_suite.py)."""

from backend_suite import BackendSuite


class TestLmdb(BackendSuite):
    backend = "lmdb"
