"""``manage.py ensure_admin``: make sure a first staff login exists and say how to use it."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the 'admin' superuser with a random password on first run, and print the login."

    def handle(self, *args: Any, **options: Any) -> None:
        password_file = settings.DATA_DIR / "admin-password"
        if User.objects.filter(is_superuser=True).exists():
            if password_file.exists():
                self.stdout.write(
                    f"Log in as 'admin' with the password in {password_file} "
                    f"({password_file.read_text().strip()})"
                )
            else:
                self.stdout.write("A superuser exists; log in with its credentials.")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser("admin", email="", password=password)
        settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        self.stdout.write(
            f"Created user 'admin' with password {password} (kept in {password_file})"
        )
