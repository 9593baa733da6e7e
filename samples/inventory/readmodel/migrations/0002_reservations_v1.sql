-- The reservations read model, version 1 (projection inventory_reservations
-- v1): the OPEN reservations. A release or a shipment deletes the row; the
-- history stays in the event store. Reservation ids are unique per
-- (warehouse, sku) only, so one id may hold stock of several SKUs (an order
-- reserving each of its lines under the order's id): one row per line.
CREATE TABLE inventory_reservations_v1 (
    reservation_id text COLLATE "C" NOT NULL,
    warehouse      text COLLATE "C" NOT NULL,
    sku            text COLLATE "C" NOT NULL,
    qty            bigint NOT NULL CHECK (qty > 0),
    version        bigint NOT NULL, -- the aggregate version of the StockReserved event
    PRIMARY KEY (reservation_id, warehouse, sku)
);
