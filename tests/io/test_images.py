"""read_image on a path, on bytes and on a file object: the same picture, limits and messages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from camlens.io.images import ImageFileError, read_image


def _png(size=(8, 6), mode="RGBA") -> bytes:
    picture = Image.new(mode, size, (200, 100, 50, 128) if mode == "RGBA" else 7)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_bytes_and_file_objects_read_as_the_file_does(tmp_path):
    data = _png()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    from_path = np.asarray(read_image(path))
    from_string = np.asarray(read_image(str(path)))
    from_bytes = np.asarray(read_image(data))
    from_view = np.asarray(read_image(memoryview(data)))
    with path.open("rb") as handle:
        from_handle = np.asarray(read_image(handle))
    assert from_path.shape == (6, 8, 3)
    # RGBA composited over black: 200 * 128 / 255 rounds to 100
    assert tuple(from_path[0, 0]) == (100, 50, 25)
    for other in (from_string, from_bytes, from_view, from_handle):
        np.testing.assert_array_equal(other, from_path)


def test_limits_and_messages_name_the_source(tmp_path):
    wide = _png(size=(300, 2), mode="L")
    with pytest.raises(ImageFileError, match=r"^strip\.png: 300x2 has a long side 150 times"):
        read_image(wide, name="strip.png")
    with pytest.raises(ImageFileError, match=r"^<bytes>: 8x6 = 48 pixels is over the limit of 47"):
        read_image(_png(), max_pixels=47)
    with pytest.raises(ImageFileError, match=r"^<bytes>: empty file"):
        read_image(b"")
    with pytest.raises(ImageFileError, match=r"^upload\.jpg: not an image Pillow can read"):
        read_image(b"not a picture", name="upload.jpg")
    with pytest.raises(ImageFileError, match=r"^<file>: empty file"):
        read_image(io.BytesIO(b""))
    with pytest.raises(ImageFileError, match="open it in binary mode"):
        read_image(io.StringIO("text"))
    path = tmp_path / "b.png"
    path.write_bytes(_png(mode="L"))
    with path.open("rb") as handle, pytest.raises(ImageFileError, match=r"b\.png: 8x6 = 48"):
        read_image(handle, max_pixels=10)  # named after the file object's name
    with pytest.raises(ImageFileError, match=r"missing\.png: no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="a path, bytes or a binary file object, got int"):
        read_image(3)  # type: ignore[arg-type]
