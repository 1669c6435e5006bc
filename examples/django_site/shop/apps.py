from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "examples.django_site.shop"
    label = "shop"  # also the name of its payhook plugin (payhook_handlers.py)
    default_auto_field = "django.db.models.BigAutoField"
