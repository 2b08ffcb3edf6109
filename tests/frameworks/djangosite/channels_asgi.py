"""Django Channels in front of the test project, as Channels' docs deploy it: a
ProtocolTypeRouter sending HTTP to Django and WebSockets to consumers (a sync
`WebsocketConsumer` and an `AsyncJsonWebsocketConsumer`). mod_rwsgi mounts this file (its
`application`, tests/test_asgi_frameworks.py); uvicorn serves `djangosite.channels_asgi:mounted`,
the same application mounted at /app the way Apache mounts it."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangosite.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_http = get_asgi_application()  # before the consumers: it sets Django up

from channels.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    WebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from asgi_mount import mounted as _mounted  # noqa: E402


class EchoConsumer(WebsocketConsumer):
    """Sync consumer: Channels runs it in a thread (async_to_sync)."""

    def connect(self):
        if "reject" in self.scope["query_string"].decode():
            self.close()
            return
        self.accept()
        self.send(text_data="hello " + self.scope["url_route"]["kwargs"]["name"])

    def receive(self, text_data=None, bytes_data=None):
        if text_data == "bye":
            self.close(code=4002)
        elif text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            self.send(bytes_data=bytes_data[::-1])


class CounterConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.count = 0
        await self.accept()

    async def receive_json(self, content, **kwargs):
        self.count += 1
        await self.send_json({"n": self.count, "got": content,
                              "path": self.scope["path"]})


application = ProtocolTypeRouter({
    "http": django_http,
    "websocket": URLRouter([
        path("ws/echo/<str:name>/", EchoConsumer.as_asgi()),
        path("ws/count/", CounterConsumer.as_asgi()),
    ]),
})
mounted = _mounted(application, "/app")
