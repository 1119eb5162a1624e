"""Request bodies are bounded before anything reads them; uploads never reach the disk.

Django's DATA_UPLOAD_MAX_MEMORY_SIZE leaves files out: an anonymous client with a CSRF
cookie could post 300 MB of multipart to the login page, and Django wrote it to the server's
temporary folder before the CSRF check even looked at it. Here every request's body is
refused over GPUCONFIG_MAX_BODY_BYTES (DATA_UPLOAD_MAX_MEMORY_SIZE) before it is read, except
the one view that takes a file (GPUCONFIG_UPLOAD_BODY_LIMITS); there the file is held in
memory, never more than GPUCONFIG_MAX_UPLOAD_FILE_BYTES of it, and its real size is reported
so that the view can refuse it by name.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import NoReverseMatch, reverse


@functools.cache
def _upload_limits(names: tuple[tuple[str, int], ...]) -> dict[str, int]:
    """GPUCONFIG_UPLOAD_BODY_LIMITS as paths (URL names resolved once)."""
    limits = {}
    for name, limit in names:
        try:
            limits[reverse(name)] = limit
        except NoReverseMatch:
            continue  # an app left out of this deployment's URLs
    return limits


def body_limit(path: str) -> tuple[int, bool]:
    """The most bytes a request to ``path`` may send, and whether it takes a file."""
    uploads = _upload_limits(tuple(sorted(settings.GPUCONFIG_UPLOAD_BODY_LIMITS.items())))
    if path in uploads:
        return uploads[path], True
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE), False


class RequestBodyLimitMiddleware:
    """413 for a body over its limit, said before it is read (first in MIDDLEWARE).

    A body with a Content-Length over the limit is refused unread. A chunked body (no
    Content-Length; gunicorn passes it through) is read up to the limit and refused past
    it; within it, the request reads it as if its length had been sent (Django would
    otherwise see an empty body)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # request.path, not path_info: reverse() includes the script prefix too.
        limit, upload = body_limit(request.path)
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return _refusal(request, "The Content-Length header is not a number.", 400)
            if length > limit:
                return _too_large(request, f"{length:,} bytes", limit, upload=upload)
        elif "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            body = _read_at_most(request.META.get("wsgi.input"), limit + 1)
            if len(body) > limit:
                return _too_large(request, "over that", limit, upload=upload)
            request.META["CONTENT_LENGTH"] = str(len(body))
            # WSGIRequest read CONTENT_LENGTH (absent: 0) when it was built: give it the body.
            request._stream = io.BytesIO(body)
        return self.get_response(request)


def _read_at_most(stream: Any, size: int) -> bytes:
    if stream is None:
        return b""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = stream.read(min(left, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _too_large(request: HttpRequest, size: str, limit: int, *, upload: bool) -> HttpResponse:
    what = " for a backup upload" if upload else ""
    return _refusal(
        request,
        f"The request body is {size}; the limit is {limit:,} bytes{what}. "
        "Nothing was read or changed.",
        413,
    )


def _refusal(request: HttpRequest, sentence: str, status: int) -> HttpResponse:
    if request.path_info.startswith("/api/"):
        return JsonResponse({"success": False, "error": sentence}, status=status)
    return HttpResponse(sentence, status=status, content_type="text/plain; charset=utf-8")


class BoundedMemoryUploadHandler(FileUploadHandler):
    """Each uploaded file in memory, never more than GPUCONFIG_MAX_UPLOAD_FILE_BYTES + 1 of it.

    Django's default handlers write files over 2.5 MB to a temporary file. The bytes past
    the limit are counted, not kept (the middleware above already bounds how many there
    can be), so ``size`` is the real size and the view refuses the file saying so."""

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.kept = io.BytesIO()
        self.room = int(settings.GPUCONFIG_MAX_UPLOAD_FILE_BYTES) + 1

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self.room > 0:
            self.kept.write(raw_data[: self.room])
            self.room -= min(len(raw_data), self.room)
        return None  # consumed: no later handler stores it either

    def file_complete(self, file_size: int) -> InMemoryUploadedFile:
        self.kept.seek(0)
        return InMemoryUploadedFile(
            file=self.kept,
            field_name=self.field_name,
            name=self.file_name,
            content_type=self.content_type,
            size=file_size,
            charset=self.charset,
            content_type_extra=self.content_type_extra,
        )
