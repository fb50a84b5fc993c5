"""The node's state: database, tables, durable spool, queue SQL, migrations."""
