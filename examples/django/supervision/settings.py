"""Settings of the supervision example: the Django backend of the
seed's flow (the page asks it for a signed subscription, it publishes
the bornes' changes). Everything about the gateway comes from the
environment, the names of the `chouquette` CLI's:

    CHOUQUETTE_URL      the gateway's internal listener (default http://127.0.0.1:8081)
    CHOUQUETTE_APP      the app id (default bluelib)
    CHOUQUETTE_SECRETS  the app's secrets, comma-separated, newest first (signing: the first)
    CHOUQUETTE_API_KEY  the app's API key (publishing)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A development key: set DJANGO_SECRET_KEY in any real deployment.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "bornes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "supervision.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

CHOUQUETTE_URL = os.environ.get("CHOUQUETTE_URL", "http://127.0.0.1:8081")
CHOUQUETTE_APP = os.environ.get("CHOUQUETTE_APP", "bluelib")
CHOUQUETTE_SECRETS = [
    s.strip() for s in os.environ.get("CHOUQUETTE_SECRETS", "").split(",") if s.strip()
]
CHOUQUETTE_API_KEY = os.environ.get("CHOUQUETTE_API_KEY", "")

LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"chouquette": {"handlers": ["console"], "level": "INFO"}},
}
