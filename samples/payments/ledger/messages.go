package ledger

import "time"

// Topics. The account and transfer aggregates each have their own command
// topic; their events are published to <topic>.events, which the
// projections and the transfer process consume.
const (
	AccountsTopic  = "payments.accounts"
	TransfersTopic = "payments.transfers"
)

// AccountCommand is a command for one account. The set is closed.
type AccountCommand interface {
	AggregateID() string
	isAccountCommand()
}

// AccountEvent is an account's event. The set is closed.
type AccountEvent interface{ isAccountEvent() }

// TransferCommand is a command for one transfer. The set is closed.
type TransferCommand interface {
	AggregateID() string
	isTransferCommand()
}

// TransferEvent is a transfer's event. The set is closed.
type TransferEvent interface{ isTransferEvent() }

// AccountFlags are the account's balance constraints (TigerBeetle's
// account flags of the same names). At most one may be set.
type AccountFlags struct {
	// DebitsMustNotExceedCredits: debits_pending + debits_posted never
	// exceed credits_posted (a customer's funds: no overdraft). A debit
	// reservation that would break it is refused with exceeds_credits.
	DebitsMustNotExceedCredits bool `json:"debits_must_not_exceed_credits"`
	// CreditsMustNotExceedDebits: credits_pending + credits_posted never
	// exceed debits_posted (a credit line). A credit reservation that would
	// break it is refused with exceeds_debits.
	CreditsMustNotExceedDebits bool `json:"credits_must_not_exceed_debits"`
}

// Limits.
const (
	// MaxTimeout is the longest timeout of a pending transfer, in seconds
	// (TigerBeetle's is a u32 of seconds); beyond it: overflows_timeout.
	MaxTimeout = 1<<32 - 1
)

// ---- Account commands (from clients) ----

// OpenAccount creates account ID on Ledger (a currency: all amounts of a
// ledger are in its minor units) with a Code (the account's kind, e.g.
// 1 = customer, 2 = merchant, 3 = settlement; the ledger's chart of
// accounts) and Flags.
type OpenAccount struct {
	ID     string       `json:"id"`
	Ledger uint32       `json:"ledger"`
	Code   uint16       `json:"code"`
	Flags  AccountFlags `json:"flags"`
}

// CloseAccount closes account ID: no transfer can reserve on it any more.
// Refused while a transfer is pending on it.
type CloseAccount struct {
	ID string `json:"id"`
}

// ---- Account commands (from the transfer process) ----

// ReserveDebit makes Amount pending on the debit side of Account for
// Transfer, or refuses it with DebitRefused.
type ReserveDebit struct {
	Account  string `json:"account"`
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
	Ledger   uint32 `json:"ledger"` // the transfer's ledger
}

// ReserveCredit makes Amount pending on the credit side of Account for
// Transfer, or refuses it with CreditRefused. DebitLedger is the debit
// account's ledger (known from its reservation), so that the credit account
// can tell accounts_must_have_the_same_ledger.
type ReserveCredit struct {
	Account     string `json:"account"`
	Transfer    string `json:"transfer"`
	Amount      int64  `json:"amount"`
	Ledger      uint32 `json:"ledger"`
	DebitLedger uint32 `json:"debit_ledger"`
}

// PostDebit posts Amount (at most the reserved amount) of Transfer's debit
// reservation; the rest of the reservation is released.
type PostDebit struct {
	Account  string `json:"account"`
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
}

// PostCredit posts Amount of Transfer's credit reservation.
type PostCredit struct {
	Account  string `json:"account"`
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
}

// VoidDebit releases Transfer's debit reservation.
type VoidDebit struct {
	Account  string `json:"account"`
	Transfer string `json:"transfer"`
}

// VoidCredit releases Transfer's credit reservation.
type VoidCredit struct {
	Account  string `json:"account"`
	Transfer string `json:"transfer"`
}

func (c OpenAccount) AggregateID() string   { return c.ID }
func (c CloseAccount) AggregateID() string  { return c.ID }
func (c ReserveDebit) AggregateID() string  { return c.Account }
func (c ReserveCredit) AggregateID() string { return c.Account }
func (c PostDebit) AggregateID() string     { return c.Account }
func (c PostCredit) AggregateID() string    { return c.Account }
func (c VoidDebit) AggregateID() string     { return c.Account }
func (c VoidCredit) AggregateID() string    { return c.Account }

func (OpenAccount) isAccountCommand()   {}
func (CloseAccount) isAccountCommand()  {}
func (ReserveDebit) isAccountCommand()  {}
func (ReserveCredit) isAccountCommand() {}
func (PostDebit) isAccountCommand()     {}
func (PostCredit) isAccountCommand()    {}
func (VoidDebit) isAccountCommand()     {}
func (VoidCredit) isAccountCommand()    {}

// ---- Account events ----

// AccountOpened: the account exists.
type AccountOpened struct {
	Ledger uint32       `json:"ledger"`
	Code   uint16       `json:"code"`
	Flags  AccountFlags `json:"flags"`
}

// AccountClosed: no further reservations.
type AccountClosed struct{}

// DebitReserved: Amount is pending on the debit side for Transfer.
type DebitReserved struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
	Ledger   uint32 `json:"ledger"` // the account's ledger
}

// CreditReserved: Amount is pending on the credit side for Transfer.
type CreditReserved struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
	Ledger   uint32 `json:"ledger"`
}

// DebitRefused: the account refused Transfer's debit, with Code. Nothing
// changed; it is the answer the transfer process waits for.
type DebitRefused struct {
	Transfer string `json:"transfer"`
	Code     Result `json:"code"`
}

// CreditRefused: the account refused Transfer's credit, with Code.
type CreditRefused struct {
	Transfer string `json:"transfer"`
	Code     Result `json:"code"`
}

// DebitPosted: Amount of Transfer's reservation (Pending) is posted; the
// reservation is gone (Pending - Amount is released).
type DebitPosted struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
	Pending  int64  `json:"pending"`
}

// CreditPosted: Amount of Transfer's reservation (Pending) is posted.
type CreditPosted struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
	Pending  int64  `json:"pending"`
}

// DebitVoided: Transfer's reservation of Amount is released.
type DebitVoided struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
}

// CreditVoided: Transfer's reservation of Amount is released.
type CreditVoided struct {
	Transfer string `json:"transfer"`
	Amount   int64  `json:"amount"`
}

func (AccountOpened) isAccountEvent()  {}
func (AccountClosed) isAccountEvent()  {}
func (DebitReserved) isAccountEvent()  {}
func (CreditReserved) isAccountEvent() {}
func (DebitRefused) isAccountEvent()   {}
func (CreditRefused) isAccountEvent()  {}
func (DebitPosted) isAccountEvent()    {}
func (CreditPosted) isAccountEvent()   {}
func (DebitVoided) isAccountEvent()    {}
func (CreditVoided) isAccountEvent()   {}

// ---- Transfer commands (from clients) ----

// CreateTransfer creates transfer ID: Amount from DebitAccountID to
// CreditAccountID on Ledger. Pending makes it two-phase: the amount is
// reserved until posted or voided, or until Timeout seconds have passed
// (0: no timeout), when it expires. RefundOf is set by the transfer process
// only, on a refund's transfer (see RefundTransfer).
type CreateTransfer struct {
	ID              string `json:"id"`
	DebitAccountID  string `json:"debit_account_id"`
	CreditAccountID string `json:"credit_account_id"`
	Amount          int64  `json:"amount"`
	Ledger          uint32 `json:"ledger"`
	Code            uint16 `json:"code"`
	Pending         bool   `json:"pending"`
	Timeout         int64  `json:"timeout"`
	RefundOf        string `json:"refund_of,omitempty"`
}

// PostPendingTransfer posts pending transfer ID: Amount (0: the full
// pending amount; less: a partial post, the rest is released).
type PostPendingTransfer struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
}

// VoidPendingTransfer voids pending transfer ID.
type VoidPendingTransfer struct {
	ID string `json:"id"`
}

// RefundTransfer refunds Amount of posted transfer ID (a captured card
// payment) under RefundID: the transfer process then creates the reversing
// transfer RefundTransferID(ID, RefundID). The refunds of a transfer never
// exceed what it posted.
type RefundTransfer struct {
	ID       string `json:"id"`
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"`
}

// ---- Transfer commands (from the transfer process) ----

// MarkPending records that both reservations of two-phase transfer ID are
// made; it expires at ExpiresAt (zero: never).
type MarkPending struct {
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// ExpirePendingTransfer asks pending transfer ID to expire (its timeout
// fired). A post or void decided first wins: then it does nothing.
type ExpirePendingTransfer struct {
	ID string `json:"id"`
}

// MarkPosted records that both sides of ID posted Amount.
type MarkPosted struct {
	ID     string `json:"id"`
	Amount int64  `json:"amount"`
}

// MarkVoided records that both reservations of ID were voided.
type MarkVoided struct {
	ID string `json:"id"`
}

// MarkExpired records that both reservations of expired ID were voided.
type MarkExpired struct {
	ID string `json:"id"`
}

// MarkFailed records that ID failed with Code (an account refused it)
// after whatever was reserved was voided.
type MarkFailed struct {
	ID   string `json:"id"`
	Code Result `json:"code"`
}

// ReleaseRefund gives back the refundable amount of refund RefundID of ID
// whose transfer failed with Code.
type ReleaseRefund struct {
	ID       string `json:"id"`
	RefundID string `json:"refund_id"`
	Code     Result `json:"code"`
}

func (c CreateTransfer) AggregateID() string        { return c.ID }
func (c PostPendingTransfer) AggregateID() string   { return c.ID }
func (c VoidPendingTransfer) AggregateID() string   { return c.ID }
func (c RefundTransfer) AggregateID() string        { return c.ID }
func (c MarkPending) AggregateID() string           { return c.ID }
func (c ExpirePendingTransfer) AggregateID() string { return c.ID }
func (c MarkPosted) AggregateID() string            { return c.ID }
func (c MarkVoided) AggregateID() string            { return c.ID }
func (c MarkExpired) AggregateID() string           { return c.ID }
func (c MarkFailed) AggregateID() string            { return c.ID }
func (c ReleaseRefund) AggregateID() string         { return c.ID }

func (CreateTransfer) isTransferCommand()        {}
func (PostPendingTransfer) isTransferCommand()   {}
func (VoidPendingTransfer) isTransferCommand()   {}
func (RefundTransfer) isTransferCommand()        {}
func (MarkPending) isTransferCommand()           {}
func (ExpirePendingTransfer) isTransferCommand() {}
func (MarkPosted) isTransferCommand()            {}
func (MarkVoided) isTransferCommand()            {}
func (MarkExpired) isTransferCommand()           {}
func (MarkFailed) isTransferCommand()            {}
func (ReleaseRefund) isTransferCommand()         {}

// ---- Transfer events ----

// TransferCreated: the transfer exists, with these immutable fields; the
// transfer process starts reserving.
type TransferCreated struct {
	ID              string `json:"id"`
	DebitAccountID  string `json:"debit_account_id"`
	CreditAccountID string `json:"credit_account_id"`
	Amount          int64  `json:"amount"`
	Ledger          uint32 `json:"ledger"`
	Code            uint16 `json:"code"`
	Pending         bool   `json:"pending"`
	Timeout         int64  `json:"timeout"`
	RefundOf        string `json:"refund_of,omitempty"`
}

// TransferPending: both reservations are made; it expires at ExpiresAt.
type TransferPending struct {
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// PostRequested: the client posts Amount of the pending transfer.
type PostRequested struct {
	Amount int64 `json:"amount"`
}

// VoidRequested: the client voids the pending transfer.
type VoidRequested struct{}

// TransferExpiring: the timeout came before a post or a void.
type TransferExpiring struct{}

// TransferPosted: final; Amount moved from the debit to the credit account.
type TransferPosted struct {
	Amount int64 `json:"amount"`
}

// TransferVoided: final; nothing moved.
type TransferVoided struct{}

// TransferExpired: final; nothing moved.
type TransferExpired struct{}

// TransferFailed: final; nothing moved, an account refused with Code.
type TransferFailed struct {
	Code Result `json:"code"`
}

// RefundRequested: Amount of this posted transfer is being refunded under
// RefundID.
type RefundRequested struct {
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"`
}

// RefundReleased: refund RefundID's transfer failed with Code; its Amount
// is refundable again.
type RefundReleased struct {
	RefundID string `json:"refund_id"`
	Amount   int64  `json:"amount"`
	Code     Result `json:"code"`
}

func (TransferCreated) isTransferEvent()  {}
func (TransferPending) isTransferEvent()  {}
func (PostRequested) isTransferEvent()    {}
func (VoidRequested) isTransferEvent()    {}
func (TransferExpiring) isTransferEvent() {}
func (TransferPosted) isTransferEvent()   {}
func (TransferVoided) isTransferEvent()   {}
func (TransferExpired) isTransferEvent()  {}
func (TransferFailed) isTransferEvent()   {}
func (RefundRequested) isTransferEvent()  {}
func (RefundReleased) isTransferEvent()   {}
