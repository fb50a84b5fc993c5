"""Fixtures shared by the reliability tests."""

from collections.abc import Iterator

import pytest
from pynetdicom import _config as pynetdicom_config


@pytest.fixture
def raw_sending() -> Iterator[None]:
    """pynetdicom sends a file path's dataset bytes as they are, undecoded and in chunks
    (never all of it in memory): how the tests send hostile or huge datasets."""
    before = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    yield
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = before
