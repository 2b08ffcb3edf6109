"""URLs of the Django test project: the admin, a file upload form, streamed and file responses,
async and diagnostic views."""

from django.contrib import admin
from django.urls import path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("upload/", views.upload, name="upload"),
    path("stream/", views.stream, name="stream"),
    path("blob/", views.blob, name="blob"),
    path("async/", views.async_view, name="async"),
    path("async-stream/", views.async_stream, name="async-stream"),
    path("async-echo/", views.async_echo, name="async-echo"),
    path("runtime/", views.runtime, name="runtime"),
    path("echo-path/<path:rest>", views.echo_path, name="echo-path"),
]
