"""Where a data-set run's inputs come from: lists of paths and URIs, Parquet tables, remote
objects read through pyarrow's file systems, and what is refused."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from camlens.io.images import ImageFileError, read_image
from camlens.scale import sources
from camlens.scale.sources import InputItem, SourceError, decode_item, read_inputs

pa = pytest.importorskip("pyarrow", reason="pyarrow is not installed (pip install "
                                           "'camlens[scale]')")
from pyarrow import fs  # noqa: E402
from pyarrow import parquet as pq  # noqa: E402


@pytest.fixture
def bucket(monkeypatch, digit_scenes):
    """``s3://bucket/KEY`` served from the scene folder: pyarrow's URI resolution is pointed at
    the local file system, so everything after it (file info, limits, reading) is the real
    path a remote object takes."""
    resolve = sources.file_system_of

    def file_system_of(uri: str):
        if uri.startswith("s3://bucket/"):
            return fs.LocalFileSystem(), str(digit_scenes / uri.removeprefix("s3://bucket/"))
        return resolve(uri)

    monkeypatch.setattr(sources, "file_system_of", file_system_of)
    return digit_scenes


def test_a_list_names_paths_file_uris_and_remote_objects(digit_scenes, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text("\n".join([
        "# scenes", "", str(digit_scenes / "s00.png"),
        (digit_scenes / "s01.png").as_uri(),
        "s3://bucket/s02.png",
        "relative.png",
    ]))
    items = read_inputs([listing])
    assert items == [
        InputItem(str(digit_scenes / "s00.png"), str(digit_scenes / "s00.png")),
        InputItem(str(digit_scenes / "s01.png"), str(digit_scenes / "s01.png")),  # local
        InputItem("s3://bucket/s02.png", "s3://bucket/s02.png"),
        InputItem(str(tmp_path / "relative.png"), str(tmp_path / "relative.png")),
    ]
    assert sources.local_paths(items) == [items[0].path, items[1].path, items[3].path]


@pytest.mark.parametrize("line, message", [
    ("https://example.org/cat.jpg", "is a https:// URI; camlens reads local paths, file:// and"),
    ("ftp://host/cat.jpg", "is a ftp:// URI"),
    ("file://otherhost/cat.jpg", "names a file on host 'otherhost'"),
])
def test_a_list_refuses_what_it_cannot_read_naming_it(tmp_path, line, message):
    listing = tmp_path / "inputs.txt"
    listing.write_text(line + "\n")
    with pytest.raises(SourceError, match=message) as raised:
        read_inputs([listing])
    assert str(listing) in str(raised.value) and line in str(raised.value)


def test_a_remote_object_decodes_as_the_local_file(bucket):
    remote = decode_item(InputItem("s3://bucket/s03.png", "s3://bucket/s03.png"), 10**7, 50.0)
    local = read_image(bucket / "s03.png")
    assert remote.tobytes() == local.tobytes() and remote.size == local.size


def test_a_missing_large_or_odd_remote_object_is_a_bad_input(bucket, monkeypatch):
    with pytest.raises(ImageFileError, match=r"s3://bucket/nothing.png: no such object"):
        decode_item(InputItem("s3://bucket/nothing.png", "s3://bucket/nothing.png"), 10**7, 50)
    with pytest.raises(ImageFileError, match=r"s3://bucket/: not a file \(Directory\)"):
        decode_item(InputItem("s3://bucket/", "s3://bucket/"), 10**7, 50)
    monkeypatch.setattr(sources, "MAX_REMOTE_BYTES", 100)
    with pytest.raises(ImageFileError, match=r"s3://bucket/s00.png: \d+ bytes, more than the "
                                             "100 an input may have"):
        decode_item(InputItem("s3://bucket/s00.png", "s3://bucket/s00.png"), 10**7, 50)


def test_table_bytes_decode_in_memory_with_the_files_checks(digit_scenes, tmp_path,
                                                            monkeypatch):
    data = (digit_scenes / "s04.png").read_bytes()
    item = InputItem("table.parquet#0", None, data)
    assert decode_item(item, 10**7, 50).tobytes() == read_image(digit_scenes / "s04.png").tobytes()
    monkeypatch.setattr("tempfile.mkstemp", lambda *a, **k: pytest.fail("wrote a temp file"))
    decode_item(item, 10**7, 50)
    with pytest.raises(ImageFileError, match=r"table.parquet#1: 64x64 = 4,096 pixels is over the "
                                             "limit of 100"):
        decode_item(InputItem("table.parquet#1", None, data), 100, 50)


@pytest.mark.parametrize("decoding", [[], ["--processes", "2"]], ids=["threads", "processes"])
def test_a_table_of_paths_and_uris_and_a_run_over_it(bucket, tmp_path, decoding):
    """``camlens explain TABLE.parquet`` whose paths are a local file, a file:// URI, a remote
    object and a missing remote object: three explained, the missing one reported, nothing
    written in the scene folder; the same with decoding processes (which read the objects)."""
    from camlens.cli import main

    table = tmp_path / "inputs.parquet"
    pq.write_table(pa.table({"path": [str(bucket / "s05.png"), (bucket / "s06.png").as_uri(),
                                      "s3://bucket/s07.png", "s3://bucket/gone.png"]}), table)
    before = sorted(path.name for path in bucket.iterdir())
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain", str(table), "-m", "digits-gap", "--format",
                                       "npz", "-o", str(out), *decoding])
    assert result.exit_code == 1, result.output
    assert "s3://bucket/gone.png: no such object" in result.output
    lines = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    done = {line["file"]: line.get("error") for line in lines if "file" in line}
    assert done == {str(bucket / "s05.png"): None, str(bucket / "s06.png"): None,
                    "s3://bucket/s07.png": None,
                    "s3://bucket/gone.png": "s3://bucket/gone.png: no such object"}
    assert sorted(path.name for path in bucket.iterdir()) == before


def test_without_pyarrow_a_remote_uri_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(ImageFileError, match=r"s3://b/x.png: reading s3:// URIs needs pyarrow "
                                             r"\(pip install 'camlens\[scale\]'\)"):
        sources.read_remote("s3://b/x.png")


def test_uri_schemes_and_paths_told_apart():
    assert sources.uri_scheme("S3://bucket/a.jpg") == "s3"
    assert sources.uri_scheme("gs://b/a.jpg") == "gs"
    assert sources.uri_scheme("/data/a.jpg") is None
    assert sources.uri_scheme("relative/a.jpg") is None
    assert sources.uri_scheme("C:\\data\\a.jpg") is None
    assert sources.uri_scheme("weird name://x") is None


def test_a_remote_folder_or_object_named_directly(bucket):
    keys = [item.key for item in read_inputs(["s3://bucket/"])]
    assert keys == [f"s3://bucket/s{index:02d}.png" for index in range(12)]
    assert [item.path for item in read_inputs(["s3://bucket/s03.png"])] == ["s3://bucket/s03.png"]
    local = read_inputs([bucket])
    assert read_inputs([bucket.as_uri()]) == local  # file://: the local folder
    with pytest.raises(SourceError, match=r"s3://bucket/nothing/: no such object or folder"):
        read_inputs(["s3://bucket/nothing/"])


def test_the_command_on_a_remote_folder(bucket, tmp_path):
    from camlens.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["explain", "s3://bucket/", "-m", "digits-gap", "--format",
                                       "npz", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "explained 12, failed 0" in result.output
    lines = [json.loads(line) for line in (out / "explanations.jsonl").read_text().splitlines()]
    assert sorted(line["file"] for line in lines if "file" in line) == [
        f"s3://bucket/s{index:02d}.png" for index in range(12)]


def test_a_web_url_named_directly_is_refused_naming_it():
    with pytest.raises(SourceError, match=r"^https://x.org/a.png: 'https://x.org/a.png' is a "
                                          r"https:// URI"):
        read_inputs(["https://x.org/a.png"])


def test_a_remote_folder_that_cannot_be_listed_says_why(monkeypatch):
    def refuse(uri: str):
        raise pa.ArrowInvalid("Expected a URI with a bucket")

    monkeypatch.setattr(sources, "file_system_of", refuse)
    with pytest.raises(SourceError, match=r"^s3://: cannot list it \(Expected a URI with a "
                                          r"bucket\)"):
        read_inputs(["s3://"])
