ALTER TABLE users ADD COLUMN IF NOT EXISTS display_name text;
COMMENT ON COLUMN users.display_name IS 'Shown instead of the email address when set';
