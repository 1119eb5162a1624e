"""``manage.py ensure_admin``: make sure a first staff login exists and say how to use it."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from common.files import private_dir, private_file_create


class Command(BaseCommand):
    help = (
        "Create the 'admin' superuser with a random password on first run and print it once; "
        "later runs only say where the login is."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        password_file = settings.DATA_DIR / "admin-password"
        admin = User.objects.filter(is_superuser=True).order_by("pk").first()
        if admin is not None:
            # Never print a password again: it was shown when it was created, and the log of
            # every later start would otherwise hold it (or an old one, once changed).
            if password_file.exists() and not admin.check_password(
                password_file.read_text().strip()
            ):
                # Changed since: the file would only mislead (and keep an old secret around).
                password_file.unlink()
            if password_file.exists():
                self.stdout.write(
                    f"Log in as {admin.get_username()!r}; its first password is in {password_file}."
                )
            else:
                self.stdout.write("A superuser exists; log in with its credentials.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        # 0600 from the first byte, in the 0700 data folder (no window for other users).
        private_dir(settings.DATA_DIR)
        password_file.unlink(missing_ok=True)  # a leftover from an earlier database
        private_file_create(password_file, password + "\n")
        self.stdout.write(
            f"Created user 'admin' with password {password} (kept in {password_file}; "
            "it is shown only this once)"
        )
