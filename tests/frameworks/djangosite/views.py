"""Views of the Django test project: a file upload through a form, a StreamingHttpResponse, a
FileResponse, and async views (served by WSGI and by ASGI)."""

import asyncio
import hashlib
import sys

from django import forms
from django.core.files.storage import default_storage
from django.conf import settings
from django.http import FileResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt


class UploadForm(forms.Form):
    title = forms.CharField(max_length=100)
    document = forms.FileField()


def upload(request):
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        if form.is_valid():
            f = form.cleaned_data["document"]
            digest = hashlib.sha256()
            for chunk in f.chunks():
                digest.update(chunk)
            # A fixed name per content, replaced if present, so answers do not depend on what
            # was uploaded before.
            stored = f"uploads/{digest.hexdigest()[:16]}-{f.name}"
            if default_storage.exists(stored):
                default_storage.delete(stored)
            f.seek(0)
            saved = default_storage.save(stored, f)
            return JsonResponse({
                "title": form.cleaned_data["title"],
                "name": f.name,
                "size": f.size,
                "content_type": f.content_type,
                "sha256": digest.hexdigest(),
                "stored": saved,
                "handler": type(f).__name__,
            })
        return render(request, "upload.html", {"form": form}, status=400)
    return render(request, "upload.html", {"form": UploadForm()})


def echo_path(request, rest):
    # What the framework made of an escaped, non-ASCII URL.
    return JsonResponse({"rest": rest, "path": request.path, "path_info": request.path_info,
                         "full_path": request.get_full_path(), "uri": request.build_absolute_uri(),
                         "query": {k: request.GET.getlist(k) for k in request.GET}})


async def async_view(request):
    # An async view under WSGI: Django runs it in an event loop through asgiref.
    n = int(request.GET.get("n", "10"))
    results = await asyncio.gather(*(asyncio.sleep(0.001, result=i * i) for i in range(n)))
    return JsonResponse({"n": n, "total": sum(results), "method": request.method})


async def async_stream(request):
    # An async StreamingHttpResponse (served as such under ASGI).
    n = int(request.GET.get("n", "5"))

    async def rows():
        for i in range(n):
            await asyncio.sleep(0.01)
            yield f"async row {i}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain; charset=utf-8")


@csrf_exempt
async def async_echo(request):
    # An async view reading the request body (Django reads it before the view runs and then
    # listens for the client going away while the view runs).
    body = request.body
    await asyncio.sleep(0.05)
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                         "content_type": request.content_type})


def runtime(request):
    # Where this process runs (checked directly by the test, not compared with gunicorn).
    return JsonResponse({"prefix": sys.prefix,
                         "process_group": request.META.get("mod_wsgi.process_group")})


def stream(request):
    n = int(request.GET.get("n", "50"))

    def rows():
        for i in range(n):
            yield f"row {i}: {'y' * (i * 53 % 700)}\n"

    resp = StreamingHttpResponse(rows(), content_type="text/plain; charset=utf-8")
    resp["X-Rows"] = str(n)
    return resp


def blob(request):
    # FileResponse goes out through wsgi.file_wrapper.
    f = open(settings.APP_DIR.parent / "static" / "blob.bin", "rb")
    return FileResponse(f, as_attachment=True, filename="blob é.bin")
