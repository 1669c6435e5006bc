"""A Django site for payhook-django's tests: SQLite as `default`, PostgreSQL as `pg`."""

import os

SECRET_KEY = "tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "testsite.urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "payhook_django",
    "testsite.shop",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TESTSITE_SQLITE"]},
}
if os.environ.get("TESTSITE_PG_NAME"):
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["TESTSITE_PG_NAME"],
        "USER": os.environ.get("TESTSITE_PG_USER", "postgres"),
        "HOST": os.environ.get("TESTSITE_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("TESTSITE_PG_PORT", "5432"),
    }
DATABASE_ROUTERS = ["testsite.routers.ShopOnStoreDatabase"]
PAYHOOK_CONFIG = os.environ.get("PAYHOOK_CONFIG", "")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
