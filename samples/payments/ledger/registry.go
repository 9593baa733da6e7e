package ledger

import (
	"fmt"

	"github.com/onceflow/onceflow/eventsource"
)

// NewRegistry returns the registry of every payments command and event, of
// both aggregates: the runtimes, the clients, the projections and the
// transfer process share it. The names ("payments.OpenAccount", ...) are
// stored in Postgres and sent on Kafka: treat them as a schema.
func NewRegistry() (*eventsource.Registry, error) {
	r := eventsource.NewRegistry()
	for _, err := range []error{
		eventsource.Register[OpenAccount](r, "payments.OpenAccount"),
		eventsource.Register[CloseAccount](r, "payments.CloseAccount"),
		eventsource.Register[ReserveDebit](r, "payments.ReserveDebit"),
		eventsource.Register[ReserveCredit](r, "payments.ReserveCredit"),
		eventsource.Register[PostDebit](r, "payments.PostDebit"),
		eventsource.Register[PostCredit](r, "payments.PostCredit"),
		eventsource.Register[VoidDebit](r, "payments.VoidDebit"),
		eventsource.Register[VoidCredit](r, "payments.VoidCredit"),
		eventsource.Register[AccountOpened](r, "payments.AccountOpened"),
		eventsource.Register[AccountClosed](r, "payments.AccountClosed"),
		eventsource.Register[DebitReserved](r, "payments.DebitReserved"),
		eventsource.Register[CreditReserved](r, "payments.CreditReserved"),
		eventsource.Register[DebitRefused](r, "payments.DebitRefused"),
		eventsource.Register[CreditRefused](r, "payments.CreditRefused"),
		eventsource.Register[DebitPosted](r, "payments.DebitPosted"),
		eventsource.Register[CreditPosted](r, "payments.CreditPosted"),
		eventsource.Register[DebitVoided](r, "payments.DebitVoided"),
		eventsource.Register[CreditVoided](r, "payments.CreditVoided"),

		eventsource.Register[CreateTransfer](r, "payments.CreateTransfer"),
		eventsource.Register[PostPendingTransfer](r, "payments.PostPendingTransfer"),
		eventsource.Register[VoidPendingTransfer](r, "payments.VoidPendingTransfer"),
		eventsource.Register[RefundTransfer](r, "payments.RefundTransfer"),
		eventsource.Register[MarkPending](r, "payments.MarkPending"),
		eventsource.Register[ExpirePendingTransfer](r, "payments.ExpirePendingTransfer"),
		eventsource.Register[MarkPosted](r, "payments.MarkPosted"),
		eventsource.Register[MarkVoided](r, "payments.MarkVoided"),
		eventsource.Register[MarkExpired](r, "payments.MarkExpired"),
		eventsource.Register[MarkFailed](r, "payments.MarkFailed"),
		eventsource.Register[ReleaseRefund](r, "payments.ReleaseRefund"),
		eventsource.Register[TransferCreated](r, "payments.TransferCreated"),
		eventsource.Register[TransferPending](r, "payments.TransferPending"),
		eventsource.Register[PostRequested](r, "payments.PostRequested"),
		eventsource.Register[VoidRequested](r, "payments.VoidRequested"),
		eventsource.Register[TransferExpiring](r, "payments.TransferExpiring"),
		eventsource.Register[TransferPosted](r, "payments.TransferPosted"),
		eventsource.Register[TransferVoided](r, "payments.TransferVoided"),
		eventsource.Register[TransferExpired](r, "payments.TransferExpired"),
		eventsource.Register[TransferFailed](r, "payments.TransferFailed"),
		eventsource.Register[RefundRequested](r, "payments.RefundRequested"),
		eventsource.Register[RefundReleased](r, "payments.RefundReleased"),
	} {
		if err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	return r, nil
}

// NewAccountAggregate returns the account aggregate on reg (NewRegistry),
// for actor.NewRuntime on AccountsTopic.
func NewAccountAggregate(reg *eventsource.Registry) (*eventsource.Aggregate[Account, AccountCommand, AccountEvent], error) {
	a := &eventsource.Aggregate[Account, AccountCommand, AccountEvent]{Type: AccountType, Decider: AccountDecider(), Registry: reg}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}

// NewTransferAggregate returns the transfer aggregate on reg, for
// actor.NewRuntime on TransfersTopic.
func NewTransferAggregate(reg *eventsource.Registry) (*eventsource.Aggregate[Transfer, TransferCommand, TransferEvent], error) {
	a := &eventsource.Aggregate[Transfer, TransferCommand, TransferEvent]{Type: TransferType, Decider: TransferDecider(), Registry: reg}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a, nil
}
