"""Alembic migrations for the store's schema, run by `open_store` on every open."""
