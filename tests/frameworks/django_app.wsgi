# mod_rwsgi entry of the Django test project (tests/frameworks/djangosite/).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from djangosite.wsgi import application  # noqa: E402,F401
