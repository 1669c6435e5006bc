#!/usr/bin/env python
"""Django's command line for the example site, run from the repository's root:
`python examples/django_site/manage.py <command>`."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The site's modules are `examples.django_site.*` (as uvicorn imports them from the
    # repository's root), so that root is where Python must look for them.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
