from django.db import models


class Order(models.Model):
    ref = models.CharField(max_length=64, unique=True)
    paid = models.BooleanField(default=False)
    # One more each time a handler applied a payment: exactly once means 1.
    times_paid = models.IntegerField(default=0)


class Application(models.Model):
    """A row per application of the handler."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE)
    stripe_event_id = models.CharField(max_length=255)
