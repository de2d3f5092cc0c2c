-- Admins disable users: a disabled user's keys stop authenticating and its sessions
-- end at once. Enabling restores the keys (not the sessions).
ALTER TABLE users ADD COLUMN disabled_at timestamptz;
