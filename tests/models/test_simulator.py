import re
from typing import Any

import pytest

from models.simulator import REWORDED, THEMES, World


def _words(item: dict[str, Any]) -> set[str]:
    text = " ".join([item["title"], item["description"], *item["tags"]])
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def test_a_reworded_platform_shares_no_word_with_the_others() -> None:
    """The head's held-out platform is reworded so that only meaning, not a shared word,
    connects it to what the head was trained on."""
    world = World(reworded=("news",))
    news: set[str] = set()
    others: set[str] = set()
    for item in world.items:
        (news if item["platform"] == "news" else others).update(_words(item))
    assert news and others
    assert news & others == set()
    assert set(REWORDED) == set(THEMES)
    assert all(len(said) == len(set(said)) == 6 for said in REWORDED.values())


def test_rewording_changes_only_the_texts() -> None:
    plain, reworded = World(seed=4), World(seed=4, reworded=("news",))
    assert [(i["item"], i["platform"], i["ts"]) for i in plain.items] == [
        (i["item"], i["platform"], i["ts"]) for i in reworded.items
    ]
    assert plain.events(5, 6, 0.0) == reworded.events(5, 6, 0.0)
    with pytest.raises(ValueError, match="not among"):
        World(platforms=("shop",), reworded=("news",))
