-- When a shown prompt's response window closes: with no tap, dismissal or conversion by then,
-- the ignore sweeper records an 'ignore' outcome.
ALTER TABLE decisions ADD COLUMN response_deadline timestamptz;

-- The sweeper's scan: shown decisions by deadline.
CREATE INDEX decisions_response_deadline ON decisions (response_deadline)
    WHERE show AND response_deadline IS NOT NULL;
