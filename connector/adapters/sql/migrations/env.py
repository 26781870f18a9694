"""Alembic environment: migrations run against the URL the connector is configured with."""

from alembic import context

from connector.adapters.sql.database import make_engine
from connector.adapters.sql.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
connectable = make_engine(url)

with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()

connectable.dispose()
