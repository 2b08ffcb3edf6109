# WSGIImportScript for tests/test_daemon.py: records the pid of every process that runs it.
import os

with open("@STATE@/preloaded", "a") as f:
    f.write("%d\n" % os.getpid())
