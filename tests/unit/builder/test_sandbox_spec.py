"""ContainerSpec: the JSON the builder hands to the sandbox init, and what a spec may not say."""
from __future__ import annotations

import pytest

from builder.sandbox.spec import ContainerSpec, Mount, SpecError

FULL = ContainerSpec(
    argv=("/bin/sh", "-c", "echo hi"), lowerdirs=("/l/2", "/l/1"), upperdir="/u", workdir="/w",
    env=("PATH=/bin", "A=b=c"), cwd="/src", user="app:staff", hostname="h", network="host",
    mounts=(Mount("bind", "/host/src", "/src", readonly=True), Mount("tmpfs", "tmpfs", "/tmp", options=("size=1m",)),
            Mount("overlay", "/out", "/in", readonly=True, lowerdirs=("/s/2/fs", "/s/1/fs")),
            Mount("overlay", "/", "/rw", lowerdirs=("/s/1/fs",), upperdir="/t/upper", workdir="/t/work")),
    extra_hosts=(("registry", "10.0.0.2"),), tty=True, sysfs=False)


@pytest.mark.parametrize("spec", [
    FULL,
    ContainerSpec(argv=("true",), lowerdirs=(), upperdir=None, workdir=None),
])
def test_json_round_trip(spec):
    assert ContainerSpec.from_json(spec.to_json()) == spec


def test_json_is_canonical_and_versioned():
    text = FULL.to_json()
    assert text.startswith('{"argv":') and '"v":1' in text
    with pytest.raises(SpecError, match="version"):
        ContainerSpec.from_json(text.replace('"v":1', '"v":9'))


def test_env_value_last_wins():
    spec = ContainerSpec(argv=("x",), lowerdirs=(), upperdir=None, workdir=None, env=("A=1", "B=2", "A=3"))
    assert (spec.env_value("A"), spec.env_value("B"), spec.env_value("C", "d")) == ("3", "2", "d")


@pytest.mark.parametrize("changes, message", [
    ({"argv": ()}, "no command"),
    ({"network": "nat"}, "network mode 'nat'"),
    ({"network": "bridge"}, "bridge network needs the descriptor"),
    ({"network": "none", "netns_fd": 5}, "only it has one"),
    ({"workdir": None}, "upperdir and workdir go together"),
    ({"cwd": "relative"}, "not an absolute path"),
    ({"env": ("NOVALUE",)}, "not KEY=VALUE"),
    ({"hostname": ""}, "hostname"),
])
def test_invalid_specs(changes, message):
    fields = dict(argv=("x",), lowerdirs=(), upperdir="/u", workdir="/w")
    fields.update(changes)
    with pytest.raises(SpecError, match=message):
        ContainerSpec(**fields)


@pytest.mark.parametrize("args, message", [
    (("nfs", "/a", "/b"), "mount type"),
    (("bind", "/a", "b"), "not an absolute path"),
    (("bind", "/a", "/"), "root directory"),
    (("bind", "a", "/b"), "source 'a'"),
])
def test_invalid_mounts(args, message):
    with pytest.raises(SpecError, match=message):
        Mount(*args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(type="overlay", source="/", target="/in"), "needs absolute lowerdirs"),
    (dict(type="overlay", source="/", target="/in", lowerdirs=("rel",)), "needs absolute lowerdirs"),
    (dict(type="overlay", source="out", target="/in", lowerdirs=("/l",)), "source 'out'"),
    (dict(type="overlay", source="/", target="/in", lowerdirs=("/l",), upperdir="/u"), "go together"),
    (dict(type="bind", source="/a", target="/b", lowerdirs=("/l",)), "belong to overlay mounts"),
])
def test_invalid_overlay_mounts(kwargs, message):
    with pytest.raises(SpecError, match=message):
        Mount(**kwargs)

