"""The container's AWS session: every client is made from it once and then reused.

A Lambda container makes its clients in the init phase (``runner.prepare``, run when
app.py is imported) so that its first invocation costs what a warm one does. Botocore
alone suffices: boto3 (and the s3transfer it pulls in) is never imported.
"""

from __future__ import annotations

import functools

import botocore.session


@functools.cache
def session() -> botocore.session.Session:
    """The one botocore session of this process (SES's client and PynamoDB's come from it)."""
    return botocore.session.get_session()
