-- Hardening against abuse from the network.
--
-- Cards belong to a tenant: a card authorizes only on its own tenant's access numbers (and
-- RADIUS clients), unless the card or the access number accepts every tenant's cards.
ALTER TABLE accounts ADD COLUMN any_tenant BIGINT NOT NULL DEFAULT 0;
ALTER TABLE access_numbers ADD COLUMN all_tenants BIGINT NOT NULL DEFAULT 0;

-- Wrong PINs since the card's last good one. Each PIN attempt claims one (atomically, with
-- the card's row) before it is checked, so parallel guesses cannot exceed the limit; at the
-- limit the card is locked until staff unblock it.
ALTER TABLE accounts ADD COLUMN pin_failures BIGINT NOT NULL DEFAULT 0;

-- Top-up, refund and adjustment references were unique across all cards, so a clerk reusing
-- another card's receipt number got an answer that named that card and its amount. They are
-- now unique per card: the idempotency key carries the account's id.
UPDATE ledger SET idempotency_key =
    kind || ':' || CAST(account_id AS TEXT) || ':' || reference
    WHERE kind IN ('topup', 'refund', 'adjustment') AND idempotency_key NOT LIKE 'create:%';

-- New money an ITSP's own token put on its cards each UTC day (card balances and top-ups),
-- charged in the same transaction as the change, against the tenant's daily allowance.
CREATE TABLE tenant_mint (
    tenant TEXT   NOT NULL,
    day    BIGINT NOT NULL,          -- days since 1970-01-01 (UTC)
    minted BIGINT NOT NULL,          -- micro-units, whatever the cards' currencies
    PRIMARY KEY (tenant, day)
);
