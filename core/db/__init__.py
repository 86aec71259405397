"""PostgreSQL access: the pool (embedded server when DATABASE_URL is unset), migrations, queries."""
