# Two callables: the default `application` and `myapp` (for WSGICallableObject).


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"default:" + environ.get("mod_wsgi.callable_object", "?").encode()]


def myapp(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"custom:" + environ.get("mod_wsgi.callable_object", "?").encode()]
