"""Image management from the command line, against docker's documented output shapes and the store's contents:
images, tag, rmi, image prune, inspect, history, system df; save/load/import/export; build outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO, TESTDATA, Pybuild, busybox_context

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))
IMAGES_JSON_FIELDS = {"Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "SharedSize", "Size",
                      "Tag", "UniqueSize", "VirtualSize"}  # docker images --format json (docs.docker.com)
INSPECT_FIELDS = {"Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Config", "Architecture", "Os",
                  "Size", "RootFS", "GraphDriver", "Metadata"}


@pytest.fixture
def fresh(tmp_path) -> Pybuild:
    """A store of its own (these tests remove images)."""
    return Pybuild(tmp_path / "store")


@pytest.fixture
def base(fresh, tmp_path) -> str:
    fresh("-t", "pybuild/busybox", "-q", str(busybox_context(tmp_path / "bb")))
    return "pybuild/busybox"


def out(proc) -> str:
    return proc.stdout.decode()


def store_total(pb: Pybuild) -> int:
    return json.loads(out(pb("cache", "du", "--format", "json")))["total"]


def test_images_shapes_filters_and_quiet(fresh, base):
    fresh(*APP, "-t", "me/app:v1", "-t", "registry.example:5000/team/a-rather-long-repository-name/app:1")
    rows = [json.loads(line) for line in out(fresh("images", "--format", "json")).splitlines()]
    assert all(set(r) == IMAGES_JSON_FIELDS for r in rows) and len(rows) == 3
    assert {(r["Repository"], r["Tag"]) for r in rows} == {
        ("me/app", "v1"), ("pybuild/busybox", "latest"),
        ("registry.example:5000/team/a-rather-long-repository-name/app", "1")}
    table = out(fresh("images"))  # piped: whole names, docker's columns
    assert table.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert "registry.example:5000/team/a-rather-long-repository-name/app" in table
    assert out(fresh("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=me/*")) == \
        "me/app:v1\n"
    app_id = json.loads(out(fresh("inspect", "me/app:v1")))[0]["Id"]
    assert out(fresh("images", "-q", "--no-trunc", "me/app")) == app_id + "\n"
    assert out(fresh("images", "-q", "--filter", f"since={base}")) == app_id[7:19] + "\n"
    assert out(fresh("images", "-q", "--filter", "before=me/app:v1")).split() != []
    assert out(fresh("images", "-q", "--filter", "dangling=true")) == ""
    assert "DIGEST" in out(fresh("images", "--digests")).splitlines()[0]
    bad = fresh("images", "--filter", "colour=red", check=False)
    assert bad.returncode == 2 and "unknown filter" in bad.stderr.decode()


def test_global_root_before_the_command(fresh, base):
    proc = subprocess.run([sys.executable, "-m", "builder", "--root", str(fresh.root), "images", "-q"],
                          capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.split()) == 1, proc.stderr


def test_tag_inspect_and_history(fresh, base):
    fresh("tag", base, "me/copy:2")
    docs = json.loads(out(fresh("inspect", base, "me/copy:2")))
    assert len(docs) == 2 and docs[0]["Id"] == docs[1]["Id"] and set(docs[0]) >= INSPECT_FIELDS
    assert sorted(docs[0]["RepoTags"]) == ["me/copy:2", "pybuild/busybox:latest"]
    assert docs[0]["RootFS"]["Type"] == "layers" and docs[0]["RootFS"]["Layers"][0].startswith("sha256:")
    assert docs[0]["Config"]["Cmd"] == ["sh"] and docs[0]["Os"] == "linux"
    assert out(fresh("inspect", "--format", "{{.Id}} {{json .Config.Cmd}}", "me/copy:2")) == \
        f'{docs[0]["Id"]} ["sh"]\n'
    short = docs[0]["Id"][7:19]
    assert json.loads(out(fresh("inspect", short)))[0]["Id"] == docs[0]["Id"]  # an id prefix names it too
    missing = fresh("inspect", "nope", check=False)
    assert missing.returncode == 1 and "no such image: nope" in missing.stderr.decode()
    lines = out(fresh("history", base, "--format", "json")).splitlines()
    assert {"ID", "CreatedAt", "CreatedSince", "CreatedBy", "Size", "Comment"} <= set(json.loads(lines[0]))
    assert json.loads(lines[-1])["CreatedBy"].startswith("COPY busybox")
    head = subprocess.run(f"{sys.executable} -m builder history --root {fresh.root} {base} --format json | head -1",
                          shell=True, capture_output=True, cwd=REPO, timeout=60, executable="/bin/bash")
    assert head.returncode == 0 and head.stderr == b"" and json.loads(head.stdout)["ID"] == short


def test_rmi_of_a_base_keeps_the_image_built_on_it(fresh, base):
    fresh("-t", "me/derived", "-t", "me/derived:2", str(_derived(fresh.root.parent)))
    fresh("rmi", base)  # the base of me/derived: its layers stay, me/derived still runs
    assert out(fresh("run", "--rm", "me/derived", "cat", "/derived.txt")) == "derived\n"
    image_id = json.loads(out(fresh("inspect", "me/derived")))[0]["Id"]
    fresh("tag", "me/derived", "other/repo:1")
    conflict = fresh("rmi", image_id[7:19], check=False)  # by id, with names in two repositories: needs -f
    assert conflict.returncode == 1 and "must be forced" in conflict.stderr.decode()
    assert out(fresh("rmi", "other/repo:1")) == "Untagged: other/repo:1\n"
    removed = out(fresh("rmi", image_id[7:19]))
    assert removed.splitlines() == ["Untagged: me/derived:2", "Untagged: me/derived:latest", f"Deleted: {image_id}"] \
        or removed.splitlines() == ["Untagged: me/derived:latest", "Untagged: me/derived:2", f"Deleted: {image_id}"]
    assert out(fresh("images", "-q")) == ""
    gone = fresh("rmi", "me/derived", check=False)
    assert gone.returncode == 1 and "no such image" in gone.stderr.decode()
    fresh("image", "prune", "-a")
    fresh("cache", "prune", "--all")
    assert store_total(fresh) == 0  # the base went with its last name


def test_rmi_of_the_derived_image_leaves_exactly_the_base(fresh, base):
    fresh("cache", "prune", "--all")
    base_only = store_total(fresh)
    df_before = out(fresh("system", "df", "--format", "{{.Type}}={{.Size}}"))
    fresh("-t", "me/derived", str(_derived(fresh.root.parent)))
    assert store_total(fresh) > base_only
    fresh("rmi", "me/derived")
    fresh("image", "prune", "-a")
    fresh("cache", "prune", "--all")
    assert store_total(fresh) == base_only
    assert out(fresh("system", "df", "--format", "{{.Type}}={{.Size}}")) == df_before
    assert out(fresh("run", "--rm", base, "echo", "ok")) == "ok\n"


def test_image_prune_removes_dangling_images_only(fresh, base, tmp_path):
    ctx = _derived(tmp_path)
    fresh("-t", "me/x", str(ctx))
    (ctx / "derived.txt").write_text("changed\n")
    fresh("-t", "me/x", str(ctx))  # the first me/x is now dangling
    dangling = out(fresh("images", "-q", "--filter", "dangling=true")).split()
    assert len(dangling) == 1 and out(fresh("images", "--format", "{{.Repository}}:{{.Tag}}", "-f",
                                            "dangling=true")) == "<none>:<none>\n"
    pruned = out(fresh("image", "prune"))
    assert f"deleted: sha256:{dangling[0]}" in pruned and "Total reclaimed space:" in pruned
    assert out(fresh("images", "-q", "--filter", "dangling=true")) == ""
    assert sorted(out(fresh("images", "--format", "{{.Repository}}")).split()) == ["me/x", "pybuild/busybox"]


def _derived(parent):
    ctx = parent / "derived-ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY derived.txt /\nRUN echo built > /built.txt\n")
    if not (ctx / "derived.txt").exists():
        (ctx / "derived.txt").write_text("derived\n")
    return ctx
