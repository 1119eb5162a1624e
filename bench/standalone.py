"""Django for a benchmark run on its own: a throwaway SQLite database and data folder.

The benchmarks that time the sampler (bench_sampler, bench_health) need settings loaded and
the data folder prepared before they import the app's modules; ``standalone_django()`` does
that once, as ``bin/run``'s ``manage.py prepare_data_dir`` would.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def standalone_django(prefix: str) -> Path:
    """Point Django at a temporary folder, set it up, and return the folder (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{folder / 'bench.sqlite3'}"
    os.environ["GPUCONFIG_DATA_DIR"] = str(folder / "data")
    os.environ["DJANGO_SECRET_KEY"] = "bench-only-" + "x" * 50  # nothing here outlives the run
    os.environ.pop("GPUCONFIG_SIMULATED_GPUS", None)
    os.environ.setdefault("GPUCONFIG_LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.conf import settings

    from common.data_dir import needs_of
    from common.data_dir import prepare as prepare_data_dir

    # As bin/run's `manage.py prepare_data_dir`: the SQLite file and the broker's folders.
    prepare_data_dir(needs_of(settings))
    return folder
