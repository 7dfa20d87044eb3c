-- A card can be sent elsewhere instead of being authorized normally (seed 003, Table 7):
-- code 52 sends the caller to customer service right after the PIN (a card staff want to talk
-- about), code 51 connects every call to one fixed number instead of the dialed one (a hotline
-- card). Redirected calls are not charged. NULL: no redirect.
ALTER TABLE accounts ADD COLUMN redirect_code BIGINT;
ALTER TABLE accounts ADD COLUMN redirect_number TEXT;
