"""The ACL file of the workload tests that drive redis as its ``default`` user.

The charm administers as ``charm-admin`` and keeps ``default`` for legacy
clients (``tests/integration/test_acl_users.py`` tests exactly that); the
older workload tests only need an admin that sends ``AUTH <password>`` and a
replication user, as ``requirepass`` gave them before users moved to the ACL file.
"""

from pathlib import Path

from workload.config import (
    ADMIN_RULES,
    LEGACY_USER,
    REPLICATION_RULES,
    REPLICATION_USER,
    acl_rule,
    render_acl_file,
)


def write_default_admin_acl(path: Path, admin_password: str, replication_password: str) -> str:
    """Write (mode 0600) an ACL file where ``default`` is an admin; return its path."""
    text = render_acl_file(
        {
            LEGACY_USER: acl_rule([admin_password], ADMIN_RULES),
            REPLICATION_USER: acl_rule([replication_password], REPLICATION_RULES),
        }
    )
    path.touch(mode=0o600)
    path.write_text(text)
    return str(path)
