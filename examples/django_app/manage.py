#!/usr/bin/env python
"""Django's command-line utility for the pqlkit example project.

Run from this folder: ``python manage.py runserver`` or ``python manage.py pqlkit_sweep``.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Run a Django management command with this project's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pqlkit_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
