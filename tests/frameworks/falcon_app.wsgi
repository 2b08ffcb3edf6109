# mod_rwsgi entry of the Falcon test application (tests/frameworks/falcon_app.py).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from falcon_app import app as application  # noqa: E402
