"""files: metadata of the blobs served at /api/v1/files/{id}

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("blob_key", sa.String(64), nullable=False),
        sa.Column("mime_type", sa.String(200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("owner_key_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False, server_default="file"),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_index("ix_files_blob_key", "files", ["blob_key"])
    op.create_index("ix_files_job_id", "files", ["job_id"])


def downgrade() -> None:
    op.drop_table("files")
