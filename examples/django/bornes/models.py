from django.conf import settings
from django.db import models


class Borne(models.Model):
    """A charging point. Each save publishes its status on the `bornes`
    channel (bornes/apps.py); `version` makes each change's event id, so
    a change published twice is delivered once."""

    uid = models.CharField(max_length=32, unique=True)
    status = models.CharField(max_length=200, default="")
    version = models.PositiveIntegerField(default=0)
    supervisors = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="bornes",
                                         blank=True)

    def save(self, *args, **kwargs):
        self.version += 1
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.uid
