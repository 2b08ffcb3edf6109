"""ASGI callable of the Django test project: mod_rwsgi mounts this file (its `application`,
tests/test_asgi_frameworks.py), uvicorn serves `djangosite.asgi:mounted`, the same application
mounted at /app the way Apache mounts it."""

import os

from django.core.asgi import get_asgi_application

from asgi_mount import mounted as _mounted

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangosite.settings")
application = get_asgi_application()
mounted = _mounted(application, "/app")
