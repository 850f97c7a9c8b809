"""The persistent label chain and env map (builder/plan/persistent.py): every version keeps its own pairs in
docker's order however the versions are read, compared against plain dicts."""
from __future__ import annotations

import random

from builder.plan.imageconfig import ImageConfig
from builder.plan.persistent import EnvMap, LabelChain


def test_env_versions_keep_their_pairs_in_any_read_order():
    rng = random.Random(7)
    versions, expected = [EnvMap.of([("PATH", "/bin")])], [{"PATH": "/bin"}]
    for _ in range(300):
        base = rng.randrange(len(versions))  # branch from any version, as stages may
        key, value = rng.choice("ABCDE"), str(rng.random())
        versions.append(versions[base].with_item(key, value))
        expected.append({**expected[base], key: value})
    for i in rng.sample(range(len(versions)), len(versions)):
        assert versions[i].pairs() == tuple(expected[i].items())  # an updated key keeps its place
        assert versions[i].get("A") == expected[i].get("A")


def test_config_env_and_labels_read_as_tuples():
    config = ImageConfig(env=(("A", "1"),)).with_env("B", "2").with_env("A", "3")
    assert config.env == (("A", "3"), ("B", "2")) and config.env_get("A") == "3" and config.env_get("C") is None
    assert config.env_list() == ["A=3", "B=2"] and dict(config.env) == {"A": "3", "B": "2"}
    labels = ImageConfig().with_label("x", "1").with_label("y", "2").with_label("x", "3").labels
    assert isinstance(labels, LabelChain) and labels == (("y", "2"), ("x", "3"))  # LABEL again moves to the end
    assert ImageConfig(env=(("A", "1"),)) == ImageConfig(env=EnvMap.of([("A", "1")]))
