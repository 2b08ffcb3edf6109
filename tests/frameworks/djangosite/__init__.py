"""Django project served by tests/test_frameworks.py under mod_rwsgi and under gunicorn."""
