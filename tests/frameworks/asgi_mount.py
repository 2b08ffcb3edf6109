"""What uvicorn serves in tests/test_asgi_frameworks.py: an ASGI application below a prefix the
way Apache mounts it (`root_path` is the mount point, `path` the whole path including it), so
the two servers give the application the same scope. uvicorn's own --root-path assumes a proxy
that stripped the prefix and prepends it again."""


def mounted(app, prefix):
    async def mount(scope, receive, send):
        if scope["type"] in ("http", "websocket") and (
                scope["path"] == prefix or scope["path"].startswith(prefix + "/")):
            scope = dict(scope, root_path=prefix)
        await app(scope, receive, send)

    return mount
