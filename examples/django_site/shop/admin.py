from django.contrib import admin

from examples.django_site.shop.models import Order

admin.site.register(Order, list_display=("ref", "paid"))
