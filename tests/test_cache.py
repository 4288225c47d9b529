"""core_seq2seq.cache: work is done only when its marker records the key that asks for it."""

from __future__ import annotations

import pytest

from core_seq2seq.cache import cached, write_json
from core_seq2seq.data import DataError


@pytest.mark.parametrize("content, key, field, done", [
    ({"key": "abc", "outputs": {"x": 1}}, "abc", "key", True),
    ({"key": "abc"}, "abd", "key", False),  # made by another config
    ({"sha256": "f00"}, "f00", "sha256", True),  # synth's shard sidecars: keyed by the shard's SHA-256
    ({"sha256": "f00"}, "f00", "key", False),
    (["abc"], "abc", "key", False),  # not a marker
])
def test_a_marker_counts_only_for_its_own_key(tmp_path, content, key, field, done):
    path = tmp_path / "stage" / "stage.json"
    write_json(path, content)
    assert cached(path, key, field) == (content if done else None)
    assert [p.name for p in path.parent.iterdir()] == ["stage.json"]  # no temporary file left behind


def test_a_missing_marker_is_not_done_and_a_broken_one_is_an_error_naming_it(tmp_path):
    assert cached(tmp_path / "none.json", "k") is None
    bad = tmp_path / "bad.json"
    bad.write_text('{"key": "k"', encoding="utf-8")
    with pytest.raises(DataError, match="bad.json: not a readable cache marker"):
        cached(bad, "k")
