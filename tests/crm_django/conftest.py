"""Django with the real CRM's models and the mirror app installed (tests in this folder)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.crm_django import configure, reset

configure(mirror=True)


@pytest.fixture
def crm_db() -> Iterator[None]:
    """An empty CRM database (contenttypes and permissions only), emptied again after."""
    reset()
    yield
    reset()
