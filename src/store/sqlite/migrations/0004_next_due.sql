-- When each live conversation is next due (a timer, a ring, an operation), in milliseconds on
-- the call clock; NULL: nothing pending. What a sweeper of several nodes looks for.
ALTER TABLE conversations ADD COLUMN next_due INTEGER;
CREATE INDEX conversations_due ON conversations (next_due) WHERE next_due IS NOT NULL;
