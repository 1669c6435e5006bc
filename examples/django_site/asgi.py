"""The site's ASGI app: payhook under /stripe/ (Stripe posts to /stripe/<tenant>), Django
everywhere else. `uvicorn examples.django_site.asgi:application` from the repository's root."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")

import payhook_django
from django.core.asgi import get_asgi_application

application = payhook_django.asgi(get_asgi_application(), prefix="/stripe/")
