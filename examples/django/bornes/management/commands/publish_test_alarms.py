"""`python manage.py publish_test_alarms --borne B1 --count 3`: publishes
test alarms in one batch (all or nothing, consecutive offsets)."""

from django.core.management.base import BaseCommand, CommandParser

from chouquette import ChouquetteError, Event

from ...gateway import CHANNEL, publisher


class Command(BaseCommand):
    help = "Publish test alarms on the bornes channel"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--borne", action="append", required=True)
        parser.add_argument("--count", type=int, default=1)
        parser.add_argument("--level", default="critical")

    def handle(self, *args, **options):
        events = [
            Event(CHANNEL, "alarm", {"borne": borne, "level": options["level"]},
                  data={"uid": borne, "status": f"test alarm {n + 1}"})
            for borne in options["borne"]
            for n in range(options["count"])
        ]
        try:
            positions = publisher().publish_batch(events)
        except ChouquetteError as e:
            self.stderr.write(f"refused: {e}")
            raise SystemExit(1) from None
        for event, position in zip(events, positions):
            self.stdout.write(f"{event.data['uid']} {position.epoch} {position.offset}")
