package api

import (
	"context"
	"time"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/payments/ledger"
	"github.com/onceflow/onceflow/samples/payments/readmodel"
)

// Reader loads the committed state of one aggregate from the event store.
// An id never seen has the initial state and version 0.
type Reader interface {
	Transfer(ctx context.Context, id string) (ledger.Transfer, int64, error)
	Account(ctx context.Context, id string) (ledger.Account, int64, error)
}

// ReadModels are the queries served from the projections.
type ReadModels interface {
	Account(ctx context.Context, id string) (readmodel.AccountBalance, error)
	Statement(ctx context.Context, id string, after int64, limit int) ([]readmodel.StatementLine, int64, error)
	Expiring(ctx context.Context, now time.Time, within time.Duration, limit int) ([]readmodel.PendingTransfer, error)
}

// StoreReader is the Reader on the Postgres event store: it rebuilds the
// aggregate from its snapshot and the events after it, so it is always
// current (the runtime answers a command only after its batch committed).
type StoreReader struct {
	Accounts  *eventsource.Aggregate[ledger.Account, ledger.AccountCommand, ledger.AccountEvent]
	Transfers *eventsource.Aggregate[ledger.Transfer, ledger.TransferCommand, ledger.TransferEvent]
	Store     *eventsource.EventStore
}

// Transfer implements Reader.
func (r StoreReader) Transfer(ctx context.Context, id string) (ledger.Transfer, int64, error) {
	return r.Transfers.Load(ctx, r.Store, id)
}

// Account implements Reader.
func (r StoreReader) Account(ctx context.Context, id string) (ledger.Account, int64, error) {
	return r.Accounts.Load(ctx, r.Store, id)
}
