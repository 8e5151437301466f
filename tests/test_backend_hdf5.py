"""The hdf5 backend passes the shared conformance suite (tests/backend_suite.py)."""

from backend_suite import BackendSuite


class TestHdf5(BackendSuite):
    backend = "hdf5"


class TestHdf5Contiguous(BackendSuite):
    backend = "hdf5"
    options = {"layout": "contiguous"}
