"""TESTING.md names real tests: every `file::test` it cites exists (the table cannot drift from the suite)."""

from __future__ import annotations

import re

from .conftest import REPO


def test_every_test_cited_in_testing_md_exists() -> None:
    text = (REPO / "TESTING.md").read_text(encoding="utf-8")
    cited = re.findall(r"`((?:engine|plugin)/(?:\w+/)?test_\w+\.py)(?:::(\w+))?`", text)
    assert len(cited) > 30
    for file, name in cited:
        source = (REPO / "tests" / file).read_text(encoding="utf-8")
        assert not name or re.search(rf"^def {name}\(", source, re.MULTILINE), f"{file}::{name} is not a test"
