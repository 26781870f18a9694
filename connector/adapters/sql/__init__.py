"""The SQL store: tables, repositories and the unit of work (SQLAlchemy 2, SQLite or PostgreSQL)."""
