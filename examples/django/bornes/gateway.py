"""The gateway clients of this backend, made once per process from the
settings (a Publisher keeps its connections alive between publishes)."""

from functools import lru_cache

from django.conf import settings

from chouquette import Publisher, TokenSigner

#: The channel of the seed's flow.
CHANNEL = "bornes"


@lru_cache(maxsize=1)
def signer() -> TokenSigner:
    return TokenSigner(settings.CHOUQUETTE_APP, settings.CHOUQUETTE_SECRETS)


@lru_cache(maxsize=1)
def publisher() -> Publisher:
    return Publisher(settings.CHOUQUETTE_URL, settings.CHOUQUETTE_API_KEY,
                     settings.CHOUQUETTE_APP)
