-- A DID can ring a softphone subscriber (phone-to-PC): the SIP account (user@domain) whose
-- registered contacts a call to the number rings. NULL: the number runs a flow or is pinless.
ALTER TABLE access_numbers ADD COLUMN subscriber TEXT;
