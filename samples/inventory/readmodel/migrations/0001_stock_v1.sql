-- The stock read model, version 1 (projection inventory_stock v1): one row
-- per (warehouse, sku) that has events. A pure fold of the stock events (no
-- clock), so a rebuild fills the same rows. "C" collation: keyset
-- pagination compares bytes, whatever the database's locale.
CREATE TABLE inventory_stock_v1 (
    warehouse text COLLATE "C" NOT NULL,
    sku       text COLLATE "C" NOT NULL,
    on_hand   bigint NOT NULL,
    reserved  bigint NOT NULL,
    available bigint GENERATED ALWAYS AS (on_hand - reserved) STORED,
    version   bigint NOT NULL, -- the aggregate version of the last event applied
    PRIMARY KEY (warehouse, sku),
    -- The domain's invariant: an event applied twice or skipped shows up
    -- here as a failed Apply (the projection halts) instead of wrong numbers.
    CONSTRAINT inventory_stock_v1_invariant CHECK (0 <= reserved AND reserved <= on_hand)
);

-- Low stock: available < N, lowest first (LowStock's keyset order).
CREATE INDEX inventory_stock_v1_available ON inventory_stock_v1 (available, warehouse, sku);
