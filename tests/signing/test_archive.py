"""extract-sign-image: OCI and docker-save archives in, signed OCI layouts out; bad tars out."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from trustyard.signing import archive
from trustyard.signing.errors import ArchiveError

from .helpers import Keys, Unchanged, manifest_of, read_json, run, sh, tree_hash


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory, base_layout: Path) -> Path:
    """docker-archive and oci-archive tarballs of image 1.0, made by skopeo."""
    d = tmp_path_factory.mktemp("archives")
    sh("skopeo", "copy", f"oci:{base_layout}:1.0", f"docker-archive:{d / 'nginx.tar'}:app:1.0")
    sh("skopeo", "copy", f"oci:{base_layout}:1.0", f"oci-archive:{d / 'oci.tar'}:1.0")
    return d


def extract(registry: Path, keyset: Keys, tar: Path, ref: str, *extra: str) -> object:
    return run(
        "extract-sign-image",
        "-r",
        registry,
        "-f",
        tar,
        "-d",
        ref,
        "-v",
        keyset.vendor_prv,
        "-s",
        keyset.vendor_pub_sig,
        "-c",
        keyset.root_pub,
        *extra,
    )


def check_signed(registry: Path, app: str, ref: str, keyset: Keys, tmp: Path) -> None:
    result = run("verify-image", "-r", registry, "-a", app, "-d", ref, "-c", keyset.root_pub)
    assert result.exit_code == 0, result.output
    layout = registry / app
    sh("umoci", "stat", "--image", f"{layout}:{ref}")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}", tmp / f"bundle-{app}")
    assert (tmp / f"bundle-{app}" / "rootfs" / "1.0.txt").read_text() == "one"
    sh("skopeo", "copy", f"oci:{layout}:{ref}", f"oci:{tmp / 'copy'}:{app}")
    assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "oci-layout"]
    assert not [p for p in registry.iterdir() if p.name.startswith(".")]


def test_docker_archive_is_converted_and_signed(
    registry: Path, keyset: Keys, archives: Path, tmp_path: Path
) -> None:
    result = extract(registry, keyset, archives / "nginx.tar", "1.0")
    assert result.exit_code == 0, result.output
    assert "extracted" in result.output
    desc = read_json(registry / "nginx" / "index.json")["manifests"][0]  # app name from file
    assert desc["annotations"] == {
        "io.containerd.image.name": "docker.io/library/app:1.0",
        "org.opencontainers.image.ref.name": "1.0",
    }
    check_signed(registry, "nginx", "1.0", keyset, tmp_path)
    verify = run(
        "verify-image", "-r", registry, "-a", "nginx", "-d", "app:1.0", "-c", keyset.root_pub
    )
    assert verify.exit_code == 0, verify.output


def test_oci_archive_simplified_with_app_name(
    registry: Path, keyset: Keys, archives: Path, tmp_path: Path
) -> None:
    result = run(
        "extract-sign-image",
        "-r",
        registry,
        "-f",
        archives / "oci.tar",
        "-a",
        "web",
        "-d",
        "1.0",
        "-v",
        keyset.vendor_prv,
        "-x",
        keyset.root_prv,
    )
    assert result.exit_code == 0, result.output
    check_signed(registry, "web", "1.0", keyset, tmp_path)
    # the config blob is byte-identical to the source image's: the signature binds the same image
    src_config = manifest_of(registry / "app", "1.0")[1]["config"]
    assert manifest_of(registry / "web", "1.0")[1]["config"] == src_config


def test_docker25_style_hybrid_archive_uses_its_oci_layout(
    registry: Path, keyset: Keys, base_layout: Path, tmp_path: Path
) -> None:
    tar = tmp_path / "hybrid.tar"
    with tarfile.open(tar, "w") as t:
        t.add(base_layout, arcname=".")
        for name, data in ((("manifest.json"), b"[]"), ("repositories", b"{}")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    result = extract(registry, keyset, tar, "2.0", "-a", "hybrid")
    assert result.exit_code == 0, result.output
    assert not (registry / "hybrid" / "manifest.json").exists()
    assert (
        run(
            "verify-image", "-r", registry, "-a", "hybrid", "-d", "2.0", "-c", keyset.root_pub
        ).exit_code
        == 0
    )


def test_existing_app_is_refused(
    registry: Path, keyset: Keys, archives: Path, unchanged: Unchanged
) -> None:
    result = extract(registry, keyset, archives / "oci.tar", "1.0", "-a", "app")
    assert result.exit_code == 1 and "already exists" in result.output
    unchanged()


def test_sign_failure_after_extraction_leaves_registry_unchanged(
    registry: Path, keyset: Keys, archives: Path, unchanged: Unchanged
) -> None:
    result = extract(registry, keyset, archives / "oci.tar", "9.9")
    assert result.exit_code == 1 and "'9.9' names no manifest" in result.output
    unchanged()


def test_corrupt_and_truncated_tars(
    registry: Path, keyset: Keys, archives: Path, tmp_path: Path, unchanged: Unchanged
) -> None:
    data = (archives / "oci.tar").read_bytes()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all " * 100)
    mid_data = tmp_path / "mid.tar"
    mid_data.write_bytes(data[:1536])  # cut inside the first file's data
    boundary = tmp_path / "boundary.tar"
    boundary.write_bytes(data[:1024])  # cut on a header boundary: looks complete, is not
    flipped = tmp_path / "flipped.tar"
    bad = bytearray(data)
    with tarfile.open(archives / "oci.tar") as t:
        first_blob = next(m for m in t if m.isfile() and m.name.startswith("blobs/"))
    bad[first_blob.offset_data] ^= 0x01  # change a blob's bytes, not its header
    flipped.write_bytes(bytes(bad))
    expected = {
        garbage: "is corrupt or truncated",
        mid_data: "is corrupt or truncated (unexpected end of data)",
        boundary: "holds neither an OCI layout",
        flipped: "does not match its digest",
    }
    for tar, message in expected.items():
        result = extract(registry, keyset, tar, "1.0", "-a", "x")
        assert result.exit_code == 1, tar
        assert message in result.output, result.output
        assert "Traceback" not in result.output
    unchanged()


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"evil") -> None:
    with tarfile.open(path, "w") as t:
        if member.isfile():
            member.size = len(data)
            t.addfile(member, io.BytesIO(data))
        else:
            t.addfile(member)


@pytest.mark.parametrize(
    ("kind", "name", "target", "message"),
    [
        ("file", "../evil.txt", "", "path traversal outside the archive"),
        ("file", "blobs/../../evil.txt", "", "path traversal outside the archive"),
        ("file", "/tmp/evil-abs.txt", "", "absolute path"),
        ("sym", "blobs/link", "../../evil.txt", "path traversal outside the archive"),
        ("sym", "blobs/abs", "/etc/passwd", "absolute path"),
        ("hard", "blobs/hard", "../evil.txt", "path traversal outside the archive"),
        ("fifo", "blobs/fifo", "", "unsupported entry"),
    ],
)
def test_traversal_and_links_are_refused(
    registry: Path,
    keyset: Keys,
    tmp_path: Path,
    unchanged: Unchanged,
    kind: str,
    name: str,
    target: str,
    message: str,
) -> None:
    member = tarfile.TarInfo(name)
    member.type = {
        "file": tarfile.REGTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "fifo": tarfile.FIFOTYPE,
    }[kind]
    member.linkname = target
    tar = tmp_path / "evil.tar"
    _evil_tar(tar, member)
    # This test's own directory holds the registry and everything a traversal above can reach
    # short of the shared pytest directory, whose other tests' files may still be changing.
    around = tree_hash(tmp_path)
    result = extract(registry, keyset, tar, "1.0", "-a", "evil")
    assert result.exit_code == 1
    assert message in result.output, result.output
    unchanged()
    assert tree_hash(tmp_path) == around  # nothing written anywhere next to it
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not Path("/tmp/evil-abs.txt").exists()


def test_progress_reports_every_byte_and_default_app_name(archives: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    kind = archive.extract_archive(archives / "oci.tar", tmp_path / "out", seen.append)
    assert kind == "oci"
    assert sum(seen) == (archives / "oci.tar").stat().st_size
    assert archive.default_app_name(Path("/x/nginx.tar")) == "nginx"
    assert archive.default_app_name(Path("a.b.tar.gz")) == "a.b"
    with pytest.raises(ArchiveError, match="invalid app name"):
        archive.check_app_name("../up")


def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    tar = tmp_path / "dup.tar"
    with tarfile.open(tar, "w") as t:
        for _ in range(2):
            info = tarfile.TarInfo("index.json")
            info.size = 2
            t.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(ArchiveError, match="duplicate"):
        archive.extract_archive(tar, tmp_path / "out")


def test_gzip_compressed_archive_is_accepted(
    registry: Path, keyset: Keys, archives: Path, tmp_path: Path
) -> None:
    gz = tmp_path / "img.tar.gz"
    gz.write_bytes(gzip.compress((archives / "oci.tar").read_bytes()))
    result = extract(registry, keyset, gz, "1.0")
    assert result.exit_code == 0, result.output
    assert (registry / "img" / "index.json").exists()  # app name: file name sans .tar.gz


def test_progress_bar_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from trustyard.cli import sign as cli_sign

    class Tty(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr("sys.stderr", Tty(False))
    with cli_sign._progress(10) as bar:
        assert bar is None
    monkeypatch.setattr("sys.stderr", Tty(True))
    with cli_sign._progress(10) as bar:
        assert bar is not None
        bar(4)
        bar(6)
