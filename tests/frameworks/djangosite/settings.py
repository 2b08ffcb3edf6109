"""Settings of the Django test project (tests/test_frameworks.py).

The code lives in <site>/app/djangosite/ and everything the application writes (the sqlite
database, uploaded files, upload temporary files) in <site>/var/, which the test makes
writable by the user the application runs as (www-data).
"""

from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
VAR = APP_DIR.parent.parent / "var"

SECRET_KEY = "rwsgi-frameworks-test-not-secret-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "djangosite.urls"
WSGI_APPLICATION = "djangosite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [APP_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR / "db.sqlite3",
        # Two daemon processes or gunicorn workers share the file.
        "OPTIONS": {"timeout": 30},
    }
}

# The default hasher with fewer iterations (Django's own test settings do the same kind of
# thing): password checks are CPU-bound and the test logs in on several servers.
PASSWORD_HASHERS = ["djangosite.hashers.QuickPBKDF2PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
MEDIA_ROOT = VAR / "media"
MEDIA_URL = "media/"
FILE_UPLOAD_TEMP_DIR = VAR / "tmp"
# Bodies above 1 MiB go through a temporary file (TemporaryFileUploadHandler).
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
