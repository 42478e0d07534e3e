-- Built without blocking writes to users; CONCURRENTLY cannot run inside a transaction.
-- migrun:no-transaction
-- migrun:lock-timeout=2s
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (lower(email));
