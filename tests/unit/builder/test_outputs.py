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
])
def test_specs(spec, expected):
    assert parse_output(spec) == expected


@pytest.mark.parametrize("spec, words", [
    ("type=docker", "dest"),
    ("type=oci", "dest"),
    ("dest=x", "type"),
    ("type=tar,dest=x.tar", "unsupported"),
    ("type=local,dest=x", "unsupported"),
    ("type=docker,dest=x,compression=zstd", "compression"),
    ("type=registry,dest=x", "dest"),
    ("type=registry,push=false", "push"),
    ("out-dir", "key=value"),
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
