"""A Django project with the real CRM's models, to make and check its ``dumpdata`` exports.

:func:`configure` sets Django up (SQLite in memory, ``USE_TZ = True``,
``TIME_ZONE = 'UTC'`` like the CRM) and creates the tables.
"""

from __future__ import annotations

import django
from django.conf import settings
from django.core.management import call_command

CRM_APPS = [
    "tests.crm_django.users",
    "tests.crm_django.brokers",
    "tests.crm_django.borrowers",
    "tests.crm_django.applications",
    "tests.crm_django.documents",
]
CONTRIB_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
LABELS = ["admin", "auth", "contenttypes", "sessions", "users", "brokers", "borrowers"]


def configure(*, mirror: bool) -> None:
    """Configure Django once for this process, with the mirror app installed or not."""
    if settings.configured:
        return
    apps = CONTRIB_APPS + CRM_APPS + (["crm_mirror"] if mirror else [])
    settings.configure(
        INSTALLED_APPS=apps,
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
        TIME_ZONE="UTC",
        AUTH_USER_MODEL="users.User",
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        # Every app's tables straight from its models (the CRM's migrations are not ours).
        MIGRATION_MODULES={label: None for label in [*LABELS, "applications", "documents"]},
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        SECRET_KEY="tests-only",
    )
    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0)


def reset() -> None:
    """Empty every table (contenttypes and permissions are created again)."""
    call_command("flush", interactive=False, verbosity=0)
