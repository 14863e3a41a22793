"""The tlc source's tests: the shared `mirror` fixture serves the TLC's layout here and answers 403
for a month not out. They run in the main session: the assets are built for the tlc source by
`build_assets(TLC, ...)`, whatever TAXI_SOURCE says."""

import pytest


@pytest.fixture
def mirror(tlc_mirror):
    return tlc_mirror
