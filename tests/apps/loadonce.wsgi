# Slow to import (0.5 s) and records each import in the state dir: concurrent first requests
# must all wait for one import instead of seeing a half-initialised module or importing twice.
import os
import time

with open("@STATE@/imports", "a") as f:
    f.write("%d\n" % os.getpid())
time.sleep(0.5)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"loaded-once %d" % os.getpid()]
