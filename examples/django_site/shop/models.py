from django.db import models


class Order(models.Model):
    ref = models.CharField(max_length=64, unique=True)
    paid = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"order {self.ref} ({'paid' if self.paid else 'unpaid'})"
