-- Repeatable: re-applied whenever this file changes.
CREATE OR REPLACE VIEW active_users AS
SELECT id, email, coalesce(display_name, email) AS name
FROM users;
