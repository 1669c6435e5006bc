import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")

import payhook_django
from django.core.asgi import get_asgi_application

application = payhook_django.asgi(get_asgi_application(), prefix="/stripe/")
