from django.apps import AppConfig


class BornesConfig(AppConfig):
    name = "bornes"

    def ready(self) -> None:
        # Every save and delete of a Borne is published after its commit.
        from chouquette import Event
        from chouquette.django import DELETED, publish_model_changes

        from .gateway import CHANNEL, publisher
        from .models import Borne

        def to_event(borne: Borne, change: str) -> Event:
            return Event(
                CHANNEL,
                "removed" if change == DELETED else "status",
                {"borne": borne.uid},
                data={"uid": borne.uid, "status": borne.status, "change": change},
                key=f"borne:{borne.uid}",
                id=f"borne:{borne.uid}:{change}:{borne.version}",
            )

        # `publisher` is resolved at each change, so settings read late
        # (tests overriding them) are honoured.
        publish_model_changes(Borne, lambda event: publisher().publish(event), to_event)
