"""The disk backend passes the shared conformance suite (tests/backend_suite.py)."""

from backend_suite import BackendSuite


class TestDisk(BackendSuite):
    backend = "disk"
