"""`--output` specs (buildx's CSV syntax) → typed Output values; bad specs are usage errors naming the problem."""
from __future__ import annotations

import pytest

from builder.outputs import Output, parse_output, push_outputs
from builder.errors import UsageError


@pytest.mark.parametrize("spec, expected", [
    ("type=oci,dest=out", Output("oci", dest="out")),
    ("type=oci,dest=out.tar", Output("oci", dest="out.tar", tar=True)),
    ("type=oci,dest=-", Output("oci", dest="-", tar=True)),
    ("type=oci,dest=out,tar=true", Output("oci", dest="out", tar=True)),
    ("type=oci,dest=out.tar,tar=false", Output("oci", dest="out.tar")),
    ("type=docker,dest=app.tar,tar=true", Output("docker", dest="app.tar", tar=True)),
    ("type=docker,dest=app.tar", Output("docker", dest="app.tar", tar=True)),
    ("type=docker,dest=-", Output("docker", dest="-", tar=True)),
    ("type=docker,dest=a.tar,name=me/app:1", Output("docker", dest="a.tar", names=("me/app:1",), tar=True)),
    ('type=docker,dest=a.tar,"name=me/a:1,me/b:2"',
     Output("docker", dest="a.tar", names=("me/a:1", "me/b:2"), tar=True)),
    ("type=registry,name=127.0.0.1:5000/x:1", Output("registry", names=("127.0.0.1:5000/x:1",), push=True)),
    ("type=registry", Output("registry", push=True)),
    ("type=registry,name=r.example/x,registry.insecure=true",
     Output("registry", names=("r.example/x",), push=True, insecure=True)),
    ("type=image,name=r.example/x,push=true", Output("registry", names=("r.example/x",), push=True)),
    ("type=image,name=me/x", Output("image", names=("me/x",))),
    (" type = docker , dest = a.tar ", Output("docker", dest="a.tar", tar=True)),
    ("type=docker", Output("docker")),  # buildx: into the docker daemon (--load)
    ("type=local,dest=out", Output("local", dest="out")),
    ("out-dir", Output("local", dest="out-dir")),  # buildx's -o DIR shorthand
    ("-", Output("tar", dest="-")),
    ("type=tar,dest=x.tar", Output("tar", dest="x.tar")),
    ("type=tar,dest=-", Output("tar", dest="-")),
    ("type=image", Output("image")),
])
def test_specs(spec, expected):
    assert parse_output(spec) == expected


@pytest.mark.parametrize("spec, words", [
    ("type=oci", "dest"),
    ("type=local", "dest"),
    ("type=tar", "dest"),
    ("type=local,dest=-", "type=tar,dest=-"),
    ("type=local,dest=x,name=a", "name"),
    ("dest=x", "type"),
    ("type=cacheonly", "unsupported"),
    ("type=docker,dest=x,compression=zstd", "compression"),
    ("type=registry,dest=x", "dest"),
    ("type=registry,push=false", "push"),
    ("a,b", "key=value"),
    ("type=registry,registry.insecure=maybe", "registry.insecure"),
    ("type=oci,dest=x,tar=maybe", "tar"),
    ("type=docker,dest=x,tar=false", "type=oci,tar=false"),
    ("type=oci,dest=-,tar=false", "stdout"),
])
def test_bad_specs(spec, words):
    with pytest.raises(UsageError) as err:
        parse_output(spec)
    assert words in str(err.value) + (err.value.hint or "")


def test_push_flag_adds_one_registry_output_unless_one_is_given():
    assert push_outputs([], push=True) == [Output("registry", push=True)]
    assert push_outputs([], push=False) == []
    given = [Output("registry", names=("h:1/x",), push=True)]
    assert push_outputs(given, push=True) == given
    docker = Output("docker", dest="a.tar", tar=True)
    assert push_outputs([docker], push=True) == [docker, Output("registry", push=True)]


def test_dest_never_replaces_an_unrelated_file_or_directory(tmp_path):
    import io
    import tarfile

    from builder.outputs import check_dest

    notes = tmp_path / "notes.txt"
    notes.write_text("precious\n")
    for spec in (f"type=docker,dest={notes}", f"type=oci,dest={notes},tar=true", f"type=tar,dest={notes}",
                 f"type=oci,dest={notes}", f"type=local,dest={notes}"):
        with pytest.raises(UsageError):
            check_dest(parse_output(spec))
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.c").write_text("int main;\n")
    for spec in (f"type=oci,dest={project}", f"type=local,dest={project}"):
        with pytest.raises(UsageError) as err:
            check_dest(parse_output(spec))
        assert str(project) in err.value.message
    archive = tmp_path / "old.tar"  # an earlier image archive may be replaced, as re-running the build does
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("oci-layout")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    check_dest(parse_output(f"type=docker,dest={archive}"))
    check_dest(parse_output(f"type=tar,dest={archive}"))
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text("{}")
    check_dest(parse_output(f"type=oci,dest={layout}"))  # added to an existing layout
    empty = tmp_path / "empty"
    empty.mkdir()
    check_dest(parse_output(f"type=local,dest={empty}"))
    check_dest(parse_output(f"type=local,dest={tmp_path / 'new'}"))
