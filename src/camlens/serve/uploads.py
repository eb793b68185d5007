"""Request bodies read in memory: multipart forms, pictures and recordings from bytes.

Starlette spools uploaded files over 1 MB to temporary files; this server reads the body itself,
bounded by :attr:`Limits.max_upload_bytes`, and parses it with a parser whose spool never rolls
over to disk, so nothing a user sends touches the disk.
"""

from __future__ import annotations

import io
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from camlens.serve.limits import Limits
from camlens.serve.timing import phase

__all__ = ["BadRequest", "Form", "TooLarge", "Upload", "read_form", "read_picture",
           "read_recording"]


class BadRequest(ValueError):
    """The request itself is malformed (status 400); the message says what is expected."""


class TooLarge(ValueError):
    """The request body is over the upload limit (status 413)."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file, in memory."""

    filename: str
    data: bytes


@dataclass
class Form:
    """The fields (every value of each, in order) and the files of a multipart body."""

    fields: dict[str, list[str]]
    files: dict[str, list[Upload]]

    def one(self, name: str, default: str | None = None) -> str | None:
        """The single value of field ``name`` (``default`` when absent)."""
        values = self.fields.get(name, [])
        if len(values) > 1:
            raise BadRequest(f"field {name!r} was given {len(values)} times; give it once")
        return values[0] if values else default

    def many(self, name: str) -> list[str]:
        """Every value of ``name``, a comma-separated value split into its parts."""
        return [part.strip() for value in self.fields.get(name, [])
                for part in value.split(",") if part.strip()]


class _InMemoryParser(MultiPartParser):
    # The body is already bounded and in memory: its files never roll over to disk.
    spool_max_size = 1 << 62


async def _chunks(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request's body, refused (:class:`TooLarge`) as soon as it passes the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise TooLarge(f"the request is {int(declared):,} bytes, over the limit of "
                       f"{limits.max_upload_bytes:,} (camlens serve --max-upload-mb)")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_upload_bytes:
            raise TooLarge(f"the request is over the limit of {limits.max_upload_bytes:,} bytes "
                           "(camlens serve --max-upload-mb)")
        parts.append(chunk)
    return b"".join(parts)


async def read_form(request: Request, limits: Limits) -> Form:
    """The multipart form of ``request``, read in memory within ``limits``; the wait for the
    body is the request's ``upload`` phase, its parsing the ``read`` phase."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"expected a multipart/form-data body, got {content_type or 'none'!r}")
    with phase("upload"):  # waiting for the client's bytes: transfer, not work
        body = await read_body(request, limits)
    with phase("read"):
        return await _parsed(request, body, limits)


async def _parsed(request: Request, body: bytes, limits: Limits) -> Form:
    parser = _InMemoryParser(request.headers, _chunks(body), max_files=limits.max_files,
                             max_fields=64, max_part_size=64 * 1024)
    try:
        parsed = await parser.parse()
    except MultiPartException as error:
        raise BadRequest(f"cannot read the multipart body: {error.message}") from None
    fields: dict[str, list[str]] = {}
    files: dict[str, list[Upload]] = {}
    for name, value in parsed.multi_items():
        if isinstance(value, UploadFile):
            await value.seek(0)
            files.setdefault(name, []).append(Upload(value.filename or "upload",
                                                     await value.read()))
            await value.close()
        else:
            fields.setdefault(name, []).append(value)
    return Form(fields, files)


def read_picture(upload: Upload, limits: Limits):
    """The upload as an RGB PIL image, or :class:`camlens.io.ImageFileError` naming it."""
    from camlens.io.images import read_image

    return read_image(upload.data, limits.max_pixels, max_aspect=limits.max_aspect,
                      name=upload.filename)


def read_recording(upload: Upload, limits: Limits, target_rate: int = 16000):
    """The upload as a mono ``(1, T)`` waveform at ``target_rate``; a ValueError naming the file
    for one that is empty, unreadable, too short, too long or not finite."""
    import numpy as np
    import soundfile

    from camlens.io.audio import MIN_DURATION_S, read_waveform

    name = upload.filename
    if not upload.data:
        raise ValueError(f"{name} is empty")
    try:
        samples, rate = soundfile.read(io.BytesIO(upload.data), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as error:  # soundfile's LibsndfileError
        raise ValueError(f"cannot read {name} as audio ({error}); readable formats: "
                         f"{', '.join(sorted(soundfile.available_formats()))}") from None
    if len(samples) == 0:
        raise ValueError(f"{name} holds no audio samples")
    duration = len(samples) / rate
    if duration < MIN_DURATION_S:
        raise ValueError(f"{name} is {duration:.3f} s long; at least {MIN_DURATION_S} s is needed")
    if duration > limits.max_audio_s:
        raise ValueError(f"{name} is {duration:.1f} s long, over the limit of "
                         f"{limits.max_audio_s:g} s (camlens serve --max-audio-s)")
    if not np.isfinite(samples).all():
        raise ValueError(f"{name} holds NaN or infinite samples; camlens cannot explain them")
    if float(np.abs(samples).max()) == 0.0:
        raise ValueError(f"{name} holds only digital silence; there is nothing to explain")
    return read_waveform(np.ascontiguousarray(samples.mean(axis=1)), sample_rate=rate,
                         target_rate=target_rate)
