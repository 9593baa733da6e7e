package chaos

import "time"

// Attempt is one HTTP request of the load generator, as logged (one JSON
// line each in load.jsonl).
type Attempt struct {
	Key       string    `json:"key"`        // Idempotency-Key, unique per command
	CommandID string    `json:"command_id"` // api.CommandID(op, aggregate, key)
	Op        string    `json:"op"`
	Aggregate string    `json:"aggregate"`
	Body      string    `json:"body"`
	N         int       `json:"attempt"` // 1 for the first send, 2.. for retries
	Slot      int       `json:"slot"`    // instance slot it was sent to
	Start     time.Time `json:"start"`
	Millis    int64     `json:"ms"`
	HTTP      int       `json:"http,omitempty"` // 0: no response
	Code      string    `json:"code,omitempty"` // error code of a non-200 answer
	Reason    string    `json:"reason,omitempty"`
	// Fields of a 200 answer.
	FirstVersion int64  `json:"first_version,omitempty"`
	LastVersion  int64  `json:"last_version,omitempty"`
	Partition    int32  `json:"partition,omitempty"`
	Offset       int64  `json:"offset,omitempty"`
	Duplicate    bool   `json:"duplicate,omitempty"`
	Err          string `json:"err,omitempty"` // transport error
}

// Definite reports whether the answer tells the command's outcome, and
// which: "accepted" (200), "rejected" (409), "dead_lettered" (422) or
// "invalid" (another 4xx: refused by the API before anything was sent).
func (a Attempt) Definite() (string, bool) {
	switch {
	case a.HTTP == 200:
		return "accepted", true
	case a.HTTP == 409 && a.Code == "rejected":
		return "rejected", true
	case a.HTTP == 422 && a.Code == "dead_lettered":
		return "dead_lettered", true
	case a.HTTP >= 400 && a.HTTP < 500 && a.HTTP != 408 && a.HTTP != 429:
		return "invalid", true
	}
	return "", false
}

// Injected is a malformed record the harness produced straight to the
// command topic.
type Injected struct {
	Kind      string `json:"kind"`
	CommandID string `json:"command_id,omitempty"`
	// Expect is "dead_letter" or "rejected", or "refused" when the broker
	// may refuse it (ProduceErr then says why).
	Expect     string `json:"expect"`
	Partition  int32  `json:"partition"`
	Offset     int64  `json:"offset"`
	ProduceErr string `json:"produce_err,omitempty"`
}

// Record is a record of the command topic.
type Record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	CommandID string // header value; "" when absent
	HasID     bool   // the header is present and a usable command id
	Type      string
}

// Result is a row of onceflow.command_results.
type Result struct {
	CommandID    string
	Partition    int32
	Offset       int64
	AggregateID  string
	Outcome      string
	FirstVersion int64
	LastVersion  int64
	FirstSeq     int64
	LastSeq      int64
	Reason       string
}

// Event is a row of onceflow.events.
type Event struct {
	Partition   int32
	Seq         int64
	AggregateID string
	Version     int64
	Type        string
	Data        []byte
	CommandID   string
}

// DeadLetter is a row of onceflow.dead_letters.
type DeadLetter struct {
	Partition int32
	Offset    int64
	CommandID string
	Error     string
}

// Claim is a row of onceflow.partition_claims.
type Claim struct {
	Partition    int32
	NextOffset   int64
	NextSeq      int64
	Epoch        int64
	PublishedSeq int64
}

// TopicRecord is a record of the history or the state topic.
type TopicRecord struct {
	Partition int32
	Offset    int64
	Key       string
	Value     []byte
	Headers   map[string]string
}

// Snapshot is a row of onceflow.snapshots.
type Snapshot struct {
	AggregateID string
	Version     int64
	State       []byte
}

// ReadModels are the inventory sample's projections at the end of a run:
// their positions and the rows of their active versions.
type ReadModels struct {
	Positions    []ProjectionPosition
	Stock        []StockRow
	Reservations []ReservationRow
}

// ProjectionPosition is an active projection version's position on one
// source partition (0 without a claim row).
type ProjectionPosition struct {
	Name      string
	Version   int
	Partition int32
	Position  int64 // last source seq applied
	Halted    string
}

// StockRow is a row of the stock read model.
type StockRow struct {
	AggregateID      string
	OnHand, Reserved int64
	Version          int64
}

// ReservationRow is a row of the open reservations read model.
type ReservationRow struct {
	AggregateID   string
	ReservationID string
	Qty           int64
}

// Data is everything the checker looks at, collected after the run with the
// load stopped and every partition drained.
type Data struct {
	Attempts    []Attempt
	Injected    []Injected
	Records     []Record
	HighWater   map[int32]int64 // end offset of each command topic partition
	Results     []Result
	Events      []Event
	DeadLetters []DeadLetter
	Claims      []Claim
	Snapshots   []Snapshot
	History     []TopicRecord // the history topic, in offset order per partition
	States      []TopicRecord // the state topic, in offset order per partition
	ReadModels  *ReadModels   // nil when the service runs no projection
}
