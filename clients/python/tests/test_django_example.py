"""examples/django against a real gateway: its own Django tests (view,
model signal, management command) run with `manage.py test`, pointed at
the session's gateway. Django comes from examples/django/requirements.txt,
which scripts/test-python.sh installs."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import API_KEY, APP, ROOT, SECRETS, Gateway


def test_the_django_example(gateway: Gateway) -> None:
    example = ROOT / "examples" / "django"
    env = dict(
        os.environ,
        CHOUQUETTE_URL=gateway.internal,
        CHOUQUETTE_WS=gateway.ws,
        CHOUQUETTE_APP=APP,
        CHOUQUETTE_SECRETS=",".join(SECRETS),
        CHOUQUETTE_API_KEY=API_KEY,
        PYTHONWARNINGS="error",
    )
    run = subprocess.run(
        [sys.executable, "manage.py", "test", "bornes", "-v", "2"],
        cwd=example, env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Ran 3 tests" in run.stderr, run.stderr
