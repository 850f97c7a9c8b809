"""What happens to a built image besides the store: `--output` specs (buildx's CSV syntax) parsed into `Output`,
checked before the build, and sent after it (OCI layout directory or tar, docker archive, registry push, tags);
and `--metadata-file`."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.export.atomic import atomic_file
from builder.errors import PybuildError, UsageError
from builder.export.oci_layout import write_layout
from builder.plan.bases import normalize_name, split_tag
from builder.progress import events as ev
from builder.progress.tasks import exporting_layers

if TYPE_CHECKING:
    from cache import ImageRecord, Store


@dataclass(frozen=True, slots=True)
class Output:
    """One `--output`: where the built image goes besides the local store.

    type "oci" (directory layout at dest, or with ``tar`` the layout as one tar file), "docker" (docker-archive
    file at dest; no dest: piped into `docker load`), "-" = stdout for any tar, "registry" (push every name),
    "image" (only tag in the store), "local" (the image's files into the directory dest) or "tar" (the same
    files as one tar). An empty ``names`` means the `-t` names."""

    type: str
    dest: str = ""
    names: tuple[str, ...] = ()
    push: bool = False
    insecure: bool = False
    tar: bool = False  # oci/docker: one tar file (or stdout) rather than a layout directory


OUTPUT_KEYS = {"oci": {"dest", "name", "tar"}, "docker": {"dest", "name", "tar"},
               "registry": {"name", "push", "registry.insecure"}, "image": {"name", "push", "registry.insecure"},
               "local": {"dest"}, "tar": {"dest"}}
OUTPUT_HINT = ("supported: type=oci,dest=DIR|FILE.tar|-[,tar=true|false] | type=docker[,dest=FILE.tar|-] | "
               "type=registry[,name=HOST/REPO:TAG] (or --push) | type=local,dest=DIR (or just DIR) | "
               "type=tar,dest=FILE|- | type=image")


def _flag(spec: str, key: str, value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0", ""):
        raise UsageError(f"invalid --output {spec!r}: {key}={value!r} is not true or false", hint=OUTPUT_HINT)
    return value.lower() in ("true", "1", "")


def parse_output(spec: str) -> Output:
    """buildx's syntax: CSV `key=value` fields (`"name=a,b"` quotes a list), e.g. `type=docker,dest=app.tar`."""
    import csv  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    if "=" not in spec and "," not in spec and spec.strip():  # buildx: `-o DIR` is type=local, `-o -` type=tar
        return Output("tar" if spec.strip() == "-" else "local", dest=spec.strip())
    fields: dict[str, str] = {}
    for part in next(csv.reader([spec], skipinitialspace=True), []):
        key, sep, value = part.partition("=")
        if not sep:
            raise UsageError(f"invalid --output {spec!r}: expected key=value pairs", hint=OUTPUT_HINT)
        fields[key.strip().lower()] = value.strip()
    kind = fields.pop("type", "")
    if kind not in OUTPUT_KEYS:
        what = f"type {kind!r} is unsupported" if kind else "type= is missing"
        raise UsageError(f"invalid --output {spec!r}: {what}", hint=OUTPUT_HINT)
    unknown = sorted(set(fields) - OUTPUT_KEYS[kind])
    if unknown:
        raise UsageError(f"invalid --output {spec!r}: type={kind} does not take {', '.join(unknown)}",
                         hint=OUTPUT_HINT)
    names = tuple(n.strip() for n in fields.get("name", "").split(",") if n.strip())
    push = _flag(spec, "push", fields["push"]) if "push" in fields else kind == "registry"
    if kind == "registry" and not push:
        raise UsageError(f"invalid --output {spec!r}: type=registry always pushes (push=false)",
                         hint="use type=image,push=false to only tag the image in the local store")
    insecure = _flag(spec, "registry.insecure", fields["registry.insecure"]) if "registry.insecure" in fields \
        else False
    if kind in ("oci", "local", "tar") and not fields.get("dest"):
        raise UsageError(f"invalid --output {spec!r}: type={kind} needs dest=" + ("FILE|-" if kind == "tar" else "DIR"),
                         hint=OUTPUT_HINT)
    if kind == "local" and fields["dest"] == "-":
        raise UsageError(f"invalid --output {spec!r}: a directory cannot go to stdout", hint="use type=tar,dest=-")
    if kind == "image" and push:
        kind = "registry"
    dest = fields.get("dest", "")
    # buildx writes oci/docker outputs as a tar unless tar=false; pybuild's type=oci,dest=DIR (issue 2) stays a
    # layout directory, so without tar= a tar is written for dest=- and dest=*.tar only.
    tar = _flag(spec, "tar", fields["tar"]) if "tar" in fields else kind == "docker" or dest == "-" \
        or dest.endswith(".tar")
    if kind == "docker" and not dest:  # buildx: no dest = load into the docker daemon (what --load means)
        return Output("docker", names=names)
    if kind == "docker" and not tar:
        raise UsageError(f"invalid --output {spec!r}: type=docker is always a tar (docker load's format)",
                         hint="for a directory use type=oci,tar=false,dest=DIR")
    if dest == "-" and not tar:
        raise UsageError(f"invalid --output {spec!r}: a layout directory cannot go to stdout",
                         hint="drop tar=false to stream the layout as a tar, or give dest=DIR")
    return Output(kind, dest=dest, names=names, push=push, insecure=insecure, tar=tar and kind in ("oci", "docker"))


def push_outputs(outputs: list[Output], push: bool) -> list[Output]:
    """`--push` is `--output type=registry` for the -t names, unless a registry output is already given."""
    if push and not any(o.type == "registry" for o in outputs):
        return [*outputs, Output("registry", push=True)]
    return outputs


def export(store: Store, record: ImageRecord, out: Output, tags: tuple[str, ...], registries=None,
           pushed: list | None = None, sink: ev.Sink | None = None, compression: str = "gzip") -> ImageRecord:
    """Send the stored image ``record`` to one --output; ``tags`` are the normalised -t names; ``registries``
    returns the build's builder.export.registry.Registries; ``sink`` hears the pushed blobs' progress.

    Registry pushes append a PushResult to ``pushed``; repositories pushed earlier in the same registry are
    offered as cross-repository mount sources. Lazily committed layers are compressed in ``compression`` first
    (once: the store keeps the blobs); returns the record as exported, whose manifest lists them."""
    names = tuple(normalize_name(n) for n in out.names) or tags
    if out.type == "image":
        for full in names:
            store.tag(full, record.manifest.digest)
        return record
    from builder.export.image import exportable  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    with exporting_layers(sink or (lambda event: None)) as compressing:
        record = exportable(store, record, compression, progress=compressing)
    if out.type == "registry":
        # lazy: saves ~51 ms at start-up
        from builder.export.push import push_image
        from builder.export.reference import Reference

        done = pushed if pushed is not None else []
        for full in names:
            ref = Reference.parse(full)
            sources = tuple(dict.fromkeys(Reference.parse(p.name).repository for p in done
                                          if Reference.parse(p.name).domain == ref.domain))
            progress = None if sink is None else \
                (lambda digest, current, total, image=full: sink(ev.TransferProgress("push", image, digest, current,
                                                                                       total)))
            done.append(push_image(store, record, full, registries(), insecure=out.insecure,
                                   mount_sources=sources, progress=progress))
        return record
    if out.type in ("local", "tar") or (out.type == "docker" and not out.dest):
        {"local": write_local, "tar": write_rootfs_tar, "docker": docker_load}[out.type](store, record, out, names)
        return record
    docker = out.type == "docker"  # the archive docker load reads: the OCI layout tar plus manifest.json
    if out.tar and out.dest == "-":
        from builder.export.docker_archive import write_archive_to  # lazy: saves ~3 ms at start-up

        if sys.stdout.isatty():
            raise UsageError(f"refusing to write {'a docker archive' if docker else 'an OCI layout tar'} to a "
                             "terminal", hint="redirect stdout (`> image.tar`) or use dest=FILE.tar")
        write_archive_to(sys.stdout.buffer, store, record, list(names), docker_manifest=docker)
        sys.stdout.buffer.flush()
        return record
    try:
        if out.tar:
            from builder.export.docker_archive import write_archive  # lazy: saves ~2 ms at start-up

            write_archive(store, out.dest, record, list(names), docker_manifest=docker)
        elif out.type == "oci":
            write_layout(store, out.dest, record.manifest.digest, record.manifest.size, record.config.digest,
                         [l.blob.digest for l in record.layers], [(full, split_tag(full)[1]) for full in names])
    except OSError as exc:
        raise PybuildError(f"cannot write --output type={out.type},dest={out.dest}: {exc.strerror or exc}"
                           + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""),
                           reference="export-failed") from exc
    return record


def write_local(store: Store, record: ImageRecord, out: Output, names=()) -> None:
    """type=local: the image's files (owners, modes, links, xattrs) into dest, which must be new or empty.

    They are unpacked by the store's safe unpacker (no entry can write through a symlink another made) into a
    fresh directory beside dest, then moved in: an interrupted export leaves no half-written dest."""
    # lazy: saves ~49 ms at start-up
    import threading

    from builder.rootfs import write_flat
    from cache.unpack import unpack_layer

    dest = Path(out.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.")) / "fs"
    try:
        work.mkdir()
        read_fd, write_fd = os.pipe()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with os.fdopen(write_fd, "wb") as pipe:
                    write_flat(pipe, store, list(record.layers))
            except BaseException as exc:  # noqa: BLE001  (re-raised by the caller after join)
                errors.append(exc)
        writer = threading.Thread(target=produce, name="pybuild-local-output")
        writer.start()
        try:
            with os.fdopen(read_fd, "rb") as pipe:
                unpack_layer(pipe, work)
        finally:
            writer.join()
        if errors:
            raise errors[0]
        if not dest.exists():
            os.rename(work, dest)
            return
        for child in os.listdir(work):
            os.rename(work / child, dest / child)
    finally:
        shutil.rmtree(work.parent, ignore_errors=True)


def write_rootfs_tar(store: Store, record: ImageRecord, out: Output, names=()) -> None:
    """type=tar: the image's files as one tar, to dest (written to a temp file and renamed) or stdout."""
    from builder.rootfs import write_flat  # lazy: saves ~19 ms at start-up

    if out.dest == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write a tar to a terminal", hint="redirect stdout or use dest=FILE")
        write_flat(sys.stdout.buffer, store, list(record.layers))
        sys.stdout.buffer.flush()
        return
    dest = Path(out.dest)
    with atomic_file(dest) as fh:
        write_flat(fh, store, list(record.layers))


def docker_load(store: Store, record: ImageRecord, out: Output, names=()) -> None:
    """type=docker without dest (= --load): the docker archive piped into `docker load`."""
    # lazy: saves ~6 ms at start-up
    import subprocess

    from builder.export.docker_archive import write_archive_to

    proc = subprocess.Popen([shutil.which("docker") or "docker", "load"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None  # both are pipes
    try:
        write_archive_to(proc.stdin, store, record, list(names))
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise PybuildError(f"docker load failed: {err or f'exit status {proc.returncode}'}",
                           hint="the image is in pybuild's store: `pybuild save IMAGE | docker load` once docker "
                                "is up", reference="export-failed")


def check_dest(out: Output) -> None:
    """issue 19: an output never replaces an unrelated file or fills a directory that holds something else."""
    if not out.dest or out.dest == "-" or out.type not in ("oci", "docker", "tar", "local"):
        return
    dest = Path(out.dest)
    directory = out.type == "local" or (out.type == "oci" and not out.tar)
    if not os.path.lexists(dest):
        return
    if directory:
        if not dest.is_dir() or dest.is_symlink():
            raise UsageError(f"--output dest={out.dest}: it exists and is not a directory",
                             hint="remove it or choose another dest")
        if out.type == "local" and any(dest.iterdir()):
            raise UsageError(f"--output type=local,dest={out.dest}: the directory is not empty",
                             hint="give a new or empty directory (pybuild does not merge into existing files)")
        if out.type == "oci" and any(dest.iterdir()) and not (dest / "oci-layout").is_file():
            raise UsageError(f"--output type=oci,dest={out.dest}: the directory exists and is not an OCI layout",
                             hint="give a new or empty directory, or an OCI layout to add the image to")
        return
    if dest.is_dir() or dest.is_symlink() or not _is_tar(dest, image=out.type != "tar"):
        what = "an image archive" if out.type != "tar" else "a tar archive"
        raise UsageError(f"--output dest={out.dest}: it exists and is not {what}; pybuild will not replace it",
                         hint="remove it or choose another dest")


def _is_tar(path: Path, image: bool) -> bool:
    """A tar file (with ``image``: one with an oci-layout or manifest.json entry), read as far as needed."""
    import tarfile  # lazy: saves ~1 ms at start-up

    if path.is_file() and path.stat().st_size == 0:
        return True  # an empty file (e.g. made by mktemp) holds nothing to lose
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not image or member.name.lstrip("./") in ("oci-layout", "manifest.json"):
                    return True
    except (tarfile.TarError, OSError):
        return False
    return False


def write_metadata(path: str, image_id: str, manifest, names: tuple[str, ...]) -> None:
    """--metadata-file: buildx's keys for an image build, written to a temp file and renamed."""
    import json  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    doc = {"containerimage.config.digest": image_id, "containerimage.digest": manifest.digest,
           "containerimage.descriptor": {"mediaType": manifest.media_type, "digest": manifest.digest,
                                         "size": manifest.size}}
    if names:
        doc["image.name"] = ",".join(names)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_outputs(outputs: list[Output], tags: list[str]) -> None:
    """Fail before building: a push needs a name, names must parse, one stdout."""
    from builder.export.reference import Reference  # lazy: saves ~1 ms at start-up

    if sum(o.dest == "-" for o in outputs) > 1:
        raise UsageError("only one --output can write to stdout (dest=-)")
    for out in outputs:
        check_dest(out)
        if out.type == "docker" and not out.dest and not shutil.which("docker"):
            raise UsageError("--load (--output type=docker without dest) needs the docker CLI, which is not on PATH",
                             hint="write an archive with --output type=docker,dest=FILE.tar and `docker load` it "
                                  "where docker is, or keep the image in pybuild's store (it is always there)")
        if out.type == "registry" and not (out.names or tags):
            raise UsageError("nothing to push: the image has no name",
                             hint="give one with -t HOST/REPO:TAG, or --output type=registry,name=HOST/REPO:TAG")
        for name in out.names if out.type in ("registry", "image") else ():
            Reference.parse(name)
    for tag in tags:
        Reference.parse(tag)
