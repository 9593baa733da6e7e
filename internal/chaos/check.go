package chaos

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/samples/inventory/stock"
)

// Violation kinds. Each names one broken promise.
const (
	VLost                = "lost"                  // a command or record was acknowledged or consumed but has no stored outcome
	VUnresolved          = "unresolved"            // a command never got a definite answer and has no stored outcome
	VReplyMismatch       = "reply_mismatch"        // an answer the client got disagrees with the stored outcome
	VPhantom             = "phantom_result"        // a stored outcome for a command nobody sent
	VResultRecord        = "result_without_record" // a stored outcome points at a record that is not that command
	VSkipped             = "skipped_record"        // a record was passed over and its command handled at a later offset
	VVersions            = "version_gap"           // an aggregate's versions are not 1..n
	VSeq                 = "seq_gap"               // a partition's seqs are not 1..n (or the claim's next_seq disagrees)
	VEvents              = "event_mismatch"        // events and outcomes disagree (an effect applied twice, or without outcome)
	VState               = "state_mismatch"        // the stored history is not what a sequential exactly-once run would produce
	VInvariant           = "invariant"             // stock negative, reservations inconsistent
	VNotDrained          = "not_drained"           // a partition's claim is not at the end of the topic after the drain
	VUnaccountedDead     = "unaccounted_dead_letter"
	VInjectedUnhandled   = "injected_unhandled"            // a malformed record did not end as a dead letter or a rejection
	VMalformedNoDeadLtr  = "malformed_without_dead_letter" // a record without a usable command id was consumed without a dead letter
	VFaultKindNotCovered = "fault_kind_not_injected"       // the run did not inject every fault kind it had to
	VHalted              = "partition_halted"              // an instance halted a partition (liveness: it stops consuming)
	VHistoryGap          = "history_gap"                   // the history topic skips a seq, or misses a stored event
	VHistoryMismatch     = "history_mismatch"              // a history record differs from the stored event of its seq
	VStateTopic          = "state_topic_mismatch"          // the state topic's latest value of an aggregate is not the fold of its events
	VProjectionBehind    = "projection_behind"             // a projection did not apply every stored event of a partition (or halted)
	VReadModel           = "read_model_mismatch"           // a read model row differs from the fold of its aggregate's events
)

// Violation is one broken promise found by Check.
type Violation struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// CheckResult is the outcome of Check.
type CheckResult struct {
	Violations []Violation `json:"-"`
	// ViolationsByKind counts every violation; Violations lists them all,
	// the report keeps the first few of each kind.
	ViolationsByKind map[string]int `json:"violations_by_kind"`
	Commands         int            `json:"commands"`          // distinct command ids the load generator sent
	Attempts         int            `json:"attempts"`          // HTTP requests, retries included
	Retries          int            `json:"retries"`           // attempts after the first
	Outcomes         map[string]int `json:"outcomes"`          // stored outcome of the load generator's commands
	Answers          map[string]int `json:"answers"`           // definite answers seen by the load generator (retries included)
	DuplicateAnswers int            `json:"duplicate_answers"` // 200s marked duplicate (a resend answered from command_results)
	Unknown          int            `json:"unknown_attempts"`  // attempts without a definite answer (timeouts, resets, 5xx)
	Records          int            `json:"records"`           // records on the command topic
	DuplicateRecords int            `json:"duplicate_records"` // records whose command id had been handled before
	Events           int            `json:"events"`
	Aggregates       int            `json:"aggregates"`
	DeadLetters      int            `json:"dead_letters"`
	Injected         map[string]int `json:"injected"` // malformed records by kind
	BrokerRefused    int            `json:"broker_refused"`
	HistoryRecords   int            `json:"history_records"` // records on the history topic
	HistoryRepeats   int            `json:"history_repeats"` // of which repeats of an earlier seq (a publish redone after a crash)
	StateKeys        int            `json:"state_keys"`      // aggregates on the state topic
	ReadModels       string         `json:"read_models"`     // what the read-model check covered ("" when no projection ran)
}

type checker struct {
	d   *Data
	res CheckResult
	reg *eventsource.Registry
	dom Domain
}

func (c *checker) fail(kind, format string, args ...any) {
	c.res.Violations = append(c.res.Violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
	c.res.ViolationsByKind[kind]++
}

type pos struct {
	p int32
	o int64
}

// Check verifies the exactly-once properties of a finished run of the
// inventory sample (CheckWith(d, Inventory())).
func Check(d *Data) CheckResult { return CheckWith(d, Inventory()) }

// CheckWith verifies the exactly-once properties of a finished run of a
// service whose aggregate is dom. It is pure: everything it needs is in d.
func CheckWith(d *Data, dom Domain) CheckResult {
	c := &checker{d: d, reg: dom.Registry, dom: dom, res: CheckResult{
		ViolationsByKind: map[string]int{}, Outcomes: map[string]int{}, Answers: map[string]int{}, Injected: map[string]int{},
	}}
	results := map[string]Result{}
	for _, r := range d.Results {
		results[r.CommandID] = r
	}
	records := map[pos]*Record{}
	for i := range d.Records {
		r := &d.Records[i]
		records[pos{r.Partition, r.Offset}] = r
	}
	dead := map[pos]DeadLetter{}
	for _, dl := range d.DeadLetters {
		dead[pos{dl.Partition, dl.Offset}] = dl
	}
	c.res.Records, c.res.Events, c.res.DeadLetters = len(d.Records), len(d.Events), len(d.DeadLetters)

	c.commands(results)
	c.log(results, records, dead)
	c.injected(results, records, dead)
	c.events(results)
	c.model(results, records)
	c.history()
	c.stateTopic()
	c.readModels()
	return c.res
}

// commands checks the load generator's view: every command it sent has
// exactly one stored outcome, and every answer it got agrees with it.
func (c *checker) commands(results map[string]Result) {
	byID := map[string][]Attempt{}
	var order []string
	for _, a := range c.d.Attempts {
		if _, ok := byID[a.CommandID]; !ok {
			order = append(order, a.CommandID)
		}
		byID[a.CommandID] = append(byID[a.CommandID], a)
	}
	c.res.Commands, c.res.Attempts = len(order), len(c.d.Attempts)
	sent := map[string]bool{}
	for _, id := range order {
		sent[id] = true
		atts := byID[id]
		c.res.Retries += len(atts) - 1
		r, stored := results[id]
		if stored {
			c.res.Outcomes[r.Outcome]++
		}
		answered := false
		for i := range atts {
			a := &atts[i]
			out, ok := a.Definite()
			if !ok {
				c.res.Unknown++
				continue
			}
			c.res.Answers[out]++
			if a.Duplicate {
				c.res.DuplicateAnswers++
			}
			if out == "invalid" {
				if stored {
					c.fail(VReplyMismatch, "command %s: answered %d %s (%s) but has stored outcome %s", id, a.HTTP, a.Code, a.Reason, r.Outcome)
				}
				continue
			}
			answered = true
			if !stored {
				c.fail(VLost, "command %s (%s %s): answered %s (attempt %d) but has no stored outcome", id, a.Op, a.Aggregate, out, a.N)
				continue
			}
			if out != r.Outcome {
				c.fail(VReplyMismatch, "command %s: answered %s (attempt %d) but the stored outcome is %s", id, out, a.N, r.Outcome)
				continue
			}
			switch out {
			case "accepted":
				if a.FirstVersion != r.FirstVersion || a.LastVersion != r.LastVersion || a.Partition != r.Partition || a.Offset != r.Offset {
					c.fail(VReplyMismatch, "command %s: answered versions %d..%d at %d/%d (attempt %d), stored %d..%d at %d/%d",
						id, a.FirstVersion, a.LastVersion, a.Partition, a.Offset, a.N, r.FirstVersion, r.LastVersion, r.Partition, r.Offset)
				}
			case "rejected":
				if a.Reason != r.Reason {
					c.fail(VReplyMismatch, "command %s: answered rejection %q, stored %q", id, a.Reason, r.Reason)
				}
			}
		}
		if !stored && !answered {
			invalid := false
			for _, a := range atts {
				if out, _ := a.Definite(); out == "invalid" {
					invalid = true
				}
			}
			if !invalid {
				c.fail(VUnresolved, "command %s (%s %s): %d attempts, no definite answer, no stored outcome", id, atts[0].Op, atts[0].Aggregate, len(atts))
			}
		}
	}
	injected := map[string]bool{}
	for _, in := range c.d.Injected {
		if in.CommandID != "" {
			injected[in.CommandID] = true
		}
	}
	for _, r := range c.d.Results {
		if !sent[r.CommandID] && !injected[r.CommandID] {
			c.fail(VPhantom, "stored outcome %s for command %s at %d/%d, which was never sent", r.Outcome, r.CommandID, r.Partition, r.Offset)
		}
	}
}

// usableID mirrors the runtime's rule for a command id header.
func usableID(id string) bool { return id != "" && len(id) <= 200 && utf8.ValidString(id) }

// log checks the command topic against Postgres: every record below the
// claim's next_offset was handled exactly once (first handling, duplicate
// of an earlier one, or dead letter), and every partition is drained.
func (c *checker) log(results map[string]Result, records map[pos]*Record, dead map[pos]DeadLetter) {
	claims := map[int32]Claim{}
	for _, cl := range c.d.Claims {
		claims[cl.Partition] = cl
	}
	for p, hw := range c.d.HighWater {
		cl, ok := claims[p]
		switch {
		case !ok && hw > 0:
			c.fail(VNotDrained, "partition %d: %d records, no claim row", p, hw)
		case ok && cl.NextOffset != hw:
			c.fail(VNotDrained, "partition %d: claim next_offset %d, topic end %d", p, cl.NextOffset, hw)
		}
	}
	for i := range c.d.Records {
		rec := &c.d.Records[i]
		cl, ok := claims[rec.Partition]
		if !ok || rec.Offset >= cl.NextOffset {
			continue // reported as not drained
		}
		at := pos{rec.Partition, rec.Offset}
		if !rec.HasID {
			if _, ok := dead[at]; !ok {
				c.fail(VMalformedNoDeadLtr, "record %d/%d without a usable command id was consumed without a dead letter", rec.Partition, rec.Offset)
			}
			continue
		}
		r, ok := results[rec.CommandID]
		switch {
		case !ok:
			c.fail(VLost, "record %d/%d (command %s) is below the claim's next_offset %d but has no stored outcome", rec.Partition, rec.Offset, rec.CommandID, cl.NextOffset)
		case r.Partition == rec.Partition && r.Offset == rec.Offset:
		case r.Partition == rec.Partition && r.Offset < rec.Offset:
			c.res.DuplicateRecords++
		case r.Partition == rec.Partition:
			c.fail(VSkipped, "record %d/%d (command %s) was passed over: its outcome was stored for the later record at offset %d", rec.Partition, rec.Offset, rec.CommandID, r.Offset)
		default:
			c.res.DuplicateRecords++ // same id in another partition: answered from the stored outcome
		}
	}
	for _, r := range c.d.Results {
		rec, ok := records[pos{r.Partition, r.Offset}]
		if !ok || !rec.HasID || rec.CommandID != r.CommandID {
			c.fail(VResultRecord, "stored outcome of command %s points at record %d/%d, which is not that command", r.CommandID, r.Partition, r.Offset)
		}
	}
}

// injected checks that every malformed record ended as a dead letter or a
// clear rejection, and that every dead letter is one of them.
func (c *checker) injected(results map[string]Result, records map[pos]*Record, dead map[pos]DeadLetter) {
	mine := map[pos]bool{}
	for _, in := range c.d.Injected {
		c.res.Injected[in.Kind]++
		if in.ProduceErr != "" {
			if in.Expect == "refused" {
				c.res.BrokerRefused++
			} else {
				c.fail(VInjectedUnhandled, "injected %s: could not be produced: %s", in.Kind, in.ProduceErr)
			}
			continue
		}
		at := pos{in.Partition, in.Offset}
		mine[at] = true
		if _, ok := records[at]; !ok {
			c.fail(VInjectedUnhandled, "injected %s at %d/%d: not on the topic", in.Kind, in.Partition, in.Offset)
			continue
		}
		switch in.Expect {
		case "dead_letter", "refused":
			if _, ok := dead[at]; !ok {
				c.fail(VInjectedUnhandled, "injected %s at %d/%d: no dead letter", in.Kind, in.Partition, in.Offset)
			}
		case "rejected":
			if r, ok := results[in.CommandID]; !ok || r.Outcome != "rejected" || r.Partition != in.Partition || r.Offset != in.Offset {
				c.fail(VInjectedUnhandled, "injected %s at %d/%d: want a stored rejection, got %+v", in.Kind, in.Partition, in.Offset, r)
			}
		}
	}
	for _, dl := range c.d.DeadLetters {
		if !mine[pos{dl.Partition, dl.Offset}] {
			c.fail(VUnaccountedDead, "dead letter at %d/%d (command %q): %s", dl.Partition, dl.Offset, dl.CommandID, dl.Error)
		}
	}
}

// events checks versions, seqs and that each accepted command's events are
// exactly its stored range (an effect applied once).
func (c *checker) events(results map[string]Result) {
	byAgg := map[string][]int64{}
	byPart := map[int32][]int64{}
	byCmd := map[string][]Event{}
	for _, e := range c.d.Events {
		byAgg[e.AggregateID] = append(byAgg[e.AggregateID], e.Version)
		byPart[e.Partition] = append(byPart[e.Partition], e.Seq)
		byCmd[e.CommandID] = append(byCmd[e.CommandID], e)
	}
	c.res.Aggregates = len(byAgg)
	for _, agg := range slices.Sorted(maps.Keys(byAgg)) {
		if !oneToN(byAgg[agg]) {
			c.fail(VVersions, "aggregate %s: versions %s, want 1..%d", agg, summarize(byAgg[agg]), len(byAgg[agg]))
		}
	}
	claims := map[int32]Claim{}
	for _, cl := range c.d.Claims {
		claims[cl.Partition] = cl
	}
	for _, p := range slices.Sorted(maps.Keys(byPart)) {
		seqs := byPart[p]
		if !oneToN(seqs) {
			c.fail(VSeq, "partition %d: seqs %s, want 1..%d", p, summarize(seqs), len(seqs))
		}
		if cl, ok := claims[p]; ok && cl.NextSeq != int64(len(seqs))+1 {
			c.fail(VSeq, "partition %d: %d events but the claim's next_seq is %d", p, len(seqs), cl.NextSeq)
		}
	}
	for id, evs := range byCmd {
		r, ok := results[id]
		if !ok || r.Outcome != "accepted" {
			c.fail(VEvents, "command %s has %d events but its stored outcome is %q", id, len(evs), r.Outcome)
			continue
		}
		sort.Slice(evs, func(i, j int) bool { return evs[i].Version < evs[j].Version })
		want := r.LastVersion - r.FirstVersion + 1
		if int64(len(evs)) != want || evs[0].Version != r.FirstVersion || evs[len(evs)-1].Version != r.LastVersion ||
			evs[0].Seq != r.FirstSeq || evs[len(evs)-1].Seq != r.LastSeq {
			c.fail(VEvents, "command %s: %d events (versions %d..%d, seqs %d..%d), stored outcome says versions %d..%d, seqs %d..%d",
				id, len(evs), evs[0].Version, evs[len(evs)-1].Version, evs[0].Seq, evs[len(evs)-1].Seq, r.FirstVersion, r.LastVersion, r.FirstSeq, r.LastSeq)
		}
		for _, e := range evs {
			if e.AggregateID != r.AggregateID || e.Partition != r.Partition {
				c.fail(VEvents, "command %s: event %s v%d in partition %d, outcome says %s in partition %d", id, e.AggregateID, e.Version, e.Partition, r.AggregateID, r.Partition)
			}
		}
	}
	for _, r := range c.d.Results {
		if r.Outcome == "accepted" && r.LastVersion >= r.FirstVersion && r.FirstVersion > 0 && len(byCmd[r.CommandID]) == 0 {
			c.fail(VEvents, "accepted command %s (versions %d..%d) has no events", r.CommandID, r.FirstVersion, r.LastVersion)
		}
	}
}

// model replays each aggregate's handled commands, in offset order, through
// the domain's Decide and checks that the stored history is exactly what a
// sequential exactly-once execution produces: the same accept/reject
// decisions, the same events, the same rejection reasons; that the fold of
// the stored events equals the model's state; that snapshots match; and
// that stock invariants hold at every step.
func (c *checker) model(results map[string]Result, records map[pos]*Record) {
	byAgg := map[string][]Result{}
	for _, r := range c.d.Results {
		if r.Outcome == "accepted" || r.Outcome == "rejected" {
			byAgg[r.AggregateID] = append(byAgg[r.AggregateID], r)
		}
	}
	events := map[string][]Event{}
	for _, e := range c.d.Events {
		events[e.AggregateID] = append(events[e.AggregateID], e)
	}
	snaps := map[string]Snapshot{}
	for _, s := range c.d.Snapshots {
		snaps[s.AggregateID] = s
	}
	for _, agg := range slices.Sorted(maps.Keys(events)) {
		if _, ok := byAgg[agg]; !ok {
			byAgg[agg] = nil
		}
	}
	for _, agg := range slices.Sorted(maps.Keys(byAgg)) {
		rs := byAgg[agg]
		sort.Slice(rs, func(i, j int) bool { return rs[i].Offset < rs[j].Offset })
		evs := events[agg]
		sort.Slice(evs, func(i, j int) bool { return evs[i].Version < evs[j].Version })
		byCmd := map[string][]Event{}
		for _, e := range evs {
			byCmd[e.CommandID] = append(byCmd[e.CommandID], e)
		}

		model := c.dom.Initial()
		broken := false
		for _, r := range rs {
			rec := records[pos{r.Partition, r.Offset}]
			if rec == nil {
				broken = true // reported by log()
				break
			}
			cmd, err := c.reg.Decode(rec.Type, rec.Value)
			if err != nil {
				c.fail(VState, "aggregate %s: command %s at %d/%d is %s but cannot be decoded: %v", agg, r.CommandID, r.Partition, r.Offset, r.Outcome, err)
				broken = true
				break
			}
			got, derr := c.dom.Decide(model, cmd)
			switch {
			case r.Outcome == "rejected" && derr == nil:
				c.fail(VState, "aggregate %s: command %s (%T) was stored as rejected (%s) but is accepted in sequence", agg, r.CommandID, cmd, r.Reason)
				broken = true
			case r.Outcome == "rejected" && derr.Error() != r.Reason:
				c.fail(VState, "aggregate %s: command %s rejected with %q, in sequence it is rejected with %q", agg, r.CommandID, r.Reason, derr.Error())
				broken = true
			case r.Outcome == "accepted" && derr != nil:
				c.fail(VState, "aggregate %s: command %s (%T) was accepted (v%d) but in sequence it is rejected: %v", agg, r.CommandID, cmd, r.FirstVersion, derr)
				broken = true
			case r.Outcome == "accepted":
				stored := byCmd[r.CommandID]
				if len(stored) != len(got) {
					c.fail(VState, "aggregate %s: command %s stored %d events, in sequence it produces %d", agg, r.CommandID, len(stored), len(got))
					broken = true
					break
				}
				for i, ev := range got {
					name, data, err := c.reg.Encode(ev)
					if err != nil || name != stored[i].Type || !bytes.Equal(data, stored[i].Data) {
						c.fail(VState, "aggregate %s: command %s event %d: stored %s %s, in sequence %s %s", agg, r.CommandID, i, stored[i].Type, stored[i].Data, name, data)
						broken = true
					}
					if model, err = c.dom.Evolve(model, ev); err != nil {
						c.fail(VState, "aggregate %s: command %s event %d: %v", agg, r.CommandID, i, err)
						broken = true
					}
				}
			}
			if broken {
				break
			}
			if err := c.invariants(model); err != nil {
				c.fail(VInvariant, "aggregate %s after command %s: %v", agg, r.CommandID, err)
			}
		}
		if broken {
			continue
		}
		// The fold of the stored events, as a reader would compute it.
		fold, err := c.fold(evs, func(e Event, fold any) {
			if s, ok := snaps[agg]; ok && s.Version == e.Version {
				c.snapshot(agg, s, fold)
			}
		})
		if err != nil {
			c.fail(VState, "aggregate %s: %v", agg, err)
		}
		if err := c.invariants(fold); err != nil {
			c.fail(VInvariant, "aggregate %s: folded state: %v", agg, err)
		}
		if !c.dom.Equal(fold, model) {
			c.fail(VState, "aggregate %s: fold of stored events %+v, sequential replay of handled commands %+v", agg, fold, model)
		}
		if s, ok := snaps[agg]; ok && s.Version > int64(len(evs)) {
			c.fail(VState, "aggregate %s: snapshot at version %d, only %d events", agg, s.Version, len(evs))
		}
	}
}

// fold folds an aggregate's stored events (in version order) from the
// initial state, calling each (when set) with every event and the state
// after it. It stops at the first event that cannot be decoded.
func (c *checker) fold(evs []Event, each func(e Event, s any)) (any, error) {
	s := c.dom.Initial()
	for _, e := range evs {
		ev, err := c.reg.Decode(e.Type, e.Data)
		if err == nil {
			s, err = c.dom.Evolve(s, ev)
		}
		if err != nil {
			return s, fmt.Errorf("event v%d (%s) cannot be decoded: %v", e.Version, e.Type, err)
		}
		if each != nil {
			each(e, s)
		}
	}
	return s, nil
}

func (c *checker) invariants(s any) error {
	if c.dom.Invariants == nil {
		return nil
	}
	return c.dom.Invariants(s)
}

func (c *checker) snapshot(agg string, s Snapshot, fold any) {
	st, err := c.dom.DecodeState(s.State)
	if err != nil {
		c.fail(VState, "aggregate %s: snapshot v%d cannot be decoded: %v", agg, s.Version, err)
		return
	}
	if !c.dom.Equal(st, fold) {
		c.fail(VState, "aggregate %s: snapshot v%d is %+v, the fold of events 1..%d is %+v", agg, s.Version, st, s.Version, fold)
	}
}

// oneToN reports whether xs is a permutation of 1..len(xs).
func oneToN(xs []int64) bool {
	s := slices.Sorted(slices.Values(xs))
	for i, x := range s {
		if x != int64(i)+1 {
			return false
		}
	}
	return true
}

// summarize describes a set of numbers briefly: range, gaps and repeats.
func summarize(xs []int64) string {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return "none"
	}
	var gaps, reps []int64
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == s[i-1]:
			reps = append(reps, s[i])
		case s[i] > s[i-1]+1:
			gaps = append(gaps, s[i-1]+1)
		}
	}
	out := fmt.Sprintf("%d..%d (%d values)", s[0], s[len(s)-1], len(s))
	if len(gaps) > 0 {
		out += fmt.Sprintf(", missing from %v", gaps[:min(len(gaps), 5)])
	}
	if len(reps) > 0 {
		out += fmt.Sprintf(", repeated %v", reps[:min(len(reps), 5)])
	}
	return out
}

// history checks the history topic against the event store: per partition,
// the first occurrences of the seqs run 1..n in offset order with no gap (a
// repeat is allowed only of a seq already seen), n is every stored event,
// and each record carries its stored event (key, value, type, version,
// command id).
func (c *checker) history() {
	stored := map[[2]int64]Event{}
	seqs := map[int32][]int64{} // stored seqs per partition, in order (their own gaps are seq_gap's business)
	for _, e := range c.d.Events {
		stored[[2]int64{int64(e.Partition), e.Seq}] = e
		seqs[e.Partition] = append(seqs[e.Partition], e.Seq)
	}
	for _, ss := range seqs {
		slices.Sort(ss)
	}
	idx := map[int32]int{}     // how many stored seqs of the partition were first seen, in order
	last := map[int32]int64{}  // the highest seq seen
	gapped := map[int32]bool{} // report one gap per partition
	for _, r := range c.d.History {
		c.res.HistoryRecords++
		p := r.Partition
		seq, err := strconv.ParseInt(r.Headers["onceflow-seq"], 10, 64)
		if err != nil {
			c.fail(VHistoryMismatch, "history %d/%d: no seq header (%v)", p, r.Offset, r.Headers)
			continue
		}
		ss := seqs[p]
		switch {
		case seq <= last[p]:
			c.res.HistoryRepeats++
		case idx[p] < len(ss) && seq == ss[idx[p]]:
			idx[p]++
			last[p] = seq
		default:
			if !gapped[p] {
				want := "nothing (no more stored events)"
				if idx[p] < len(ss) {
					want = fmt.Sprintf("seq %d", ss[idx[p]])
				}
				c.fail(VHistoryGap, "history partition %d: seq %d at offset %d, want %s next", p, seq, r.Offset, want)
			}
			gapped[p] = true
			last[p] = seq
			for idx[p] < len(ss) && ss[idx[p]] <= seq {
				idx[p]++
			}
		}
		e, ok := stored[[2]int64{int64(p), seq}]
		if !ok {
			c.fail(VHistoryMismatch, "history %d/%d: seq %d is not a stored event of partition %d", p, r.Offset, seq, p)
			continue
		}
		if r.Key != e.AggregateID || !bytes.Equal(r.Value, e.Data) || r.Headers["onceflow-event-type"] != e.Type ||
			r.Headers["onceflow-version"] != strconv.FormatInt(e.Version, 10) || r.Headers["onceflow-command-id"] != e.CommandID ||
			r.Headers["onceflow-source-partition"] != strconv.Itoa(int(p)) {
			c.fail(VHistoryMismatch, "history %d/%d (seq %d): %s %q %s, stored event %s v%d %s %q", p, r.Offset, seq,
				r.Key, r.Value, r.Headers, e.AggregateID, e.Version, e.Type, e.Data)
		}
	}
	for _, p := range slices.Sorted(maps.Keys(seqs)) {
		if idx[p] < len(seqs[p]) && !gapped[p] {
			c.fail(VHistoryGap, "history partition %d: %d of %d stored events published (the first missing is seq %d)", p, idx[p], len(seqs[p]), seqs[p][idx[p]])
		}
	}
}

// stateTopic checks that the latest record of every aggregate on the state
// topic is the fold of its stored events, at its last version.
func (c *checker) stateTopic() {
	byAgg := map[string][]Event{}
	for _, e := range c.d.Events {
		byAgg[e.AggregateID] = append(byAgg[e.AggregateID], e)
	}
	latest := map[string]TopicRecord{}
	for _, r := range c.d.States {
		latest[r.Key] = r
	}
	c.res.StateKeys = len(latest)
	for _, agg := range slices.Sorted(maps.Keys(byAgg)) {
		evs := byAgg[agg]
		sort.Slice(evs, func(i, j int) bool { return evs[i].Version < evs[j].Version })
		fold, err := c.fold(evs, nil)
		if err != nil {
			return // reported by model
		}
		r, ok := latest[agg]
		if !ok {
			c.fail(VStateTopic, "aggregate %s (%d events) has no record on the state topic", agg, len(evs))
			continue
		}
		st, err := c.dom.DecodeState(r.Value)
		if err != nil {
			c.fail(VStateTopic, "aggregate %s: state record %q cannot be decoded: %v", agg, r.Value, err)
			continue
		}
		if v := evs[len(evs)-1].Version; !c.dom.Equal(st, fold) || r.Headers["onceflow-version"] != strconv.FormatInt(v, 10) {
			c.fail(VStateTopic, "aggregate %s: latest state record %+v at version %s, the fold of its events (to version %d) is %+v", agg, st, r.Headers["onceflow-version"], v, fold)
		}
	}
}

// readModels checks the inventory sample's projections: every active
// version applied every stored event of every partition (not halted), and
// its rows are the fold of each aggregate's stored events (stock: on hand,
// reserved, version; reservations: the open ones).
func (c *checker) readModels() {
	rm := c.d.ReadModels
	if rm == nil {
		return
	}
	last := map[int32]int64{}
	events := map[string][]Event{}
	for _, e := range c.d.Events {
		last[e.Partition] = max(last[e.Partition], e.Seq)
		events[e.AggregateID] = append(events[e.AggregateID], e)
	}
	type pv struct {
		name string
		v    int
	}
	seen := map[pv]map[int32]bool{}
	for _, p := range rm.Positions {
		k := pv{p.Name, p.Version}
		if seen[k] == nil {
			seen[k] = map[int32]bool{}
		}
		seen[k][p.Partition] = true
		if p.Halted != "" {
			c.fail(VProjectionBehind, "projection %s v%d partition %d halted at seq %d: %s", p.Name, p.Version, p.Partition, p.Position, p.Halted)
		}
		if p.Position != last[p.Partition] {
			c.fail(VProjectionBehind, "projection %s v%d partition %d at seq %d, the partition's last event is seq %d", p.Name, p.Version, p.Partition, p.Position, last[p.Partition])
		}
	}
	for k, parts := range seen {
		for p, l := range last {
			if !parts[p] && l > 0 {
				c.fail(VProjectionBehind, "projection %s v%d has no position on partition %d (last event seq %d)", k.name, k.v, p, l)
			}
		}
	}

	var positions int64
	for _, p := range rm.Positions {
		positions += p.Position
	}
	c.res.ReadModels = fmt.Sprintf("%d projection partitions at %d applied events in total, %d stock rows, %d open reservation lines compared with the fold",
		len(rm.Positions), positions, len(rm.Stock), len(rm.Reservations))
	stockRows := map[string]StockRow{}
	for _, r := range rm.Stock {
		stockRows[r.AggregateID] = r
	}
	resRows := map[string]map[string]int64{}
	for _, r := range rm.Reservations {
		if resRows[r.AggregateID] == nil {
			resRows[r.AggregateID] = map[string]int64{}
		}
		resRows[r.AggregateID][r.ReservationID] += r.Qty
	}
	for _, agg := range slices.Sorted(maps.Keys(events)) {
		evs := events[agg]
		sort.Slice(evs, func(i, j int) bool { return evs[i].Version < evs[j].Version })
		f, err := c.fold(evs, nil)
		fold, isStock := f.(stock.State)
		if err != nil || !isStock {
			continue // reported by model(); the read models are the inventory sample's
		}
		row, ok := stockRows[agg]
		switch {
		case !ok:
			c.fail(VReadModel, "stock read model has no row for %s (%d events, fold on hand %d reserved %d)", agg, len(evs), fold.OnHand, fold.Reserved)
		case row.OnHand != fold.OnHand || row.Reserved != fold.Reserved || row.Version != int64(len(evs)):
			c.fail(VReadModel, "stock read model %s: on hand %d reserved %d at v%d, the fold of its %d events: on hand %d reserved %d",
				agg, row.OnHand, row.Reserved, row.Version, len(evs), fold.OnHand, fold.Reserved)
		}
		delete(stockRows, agg)
		got := resRows[agg]
		for id, qty := range fold.Reservations {
			if got[id] != qty {
				c.fail(VReadModel, "reservations read model %s: reservation %q holds %d, the fold %d", agg, id, got[id], qty)
			}
		}
		for id, qty := range got {
			if _, ok := fold.Reservations[id]; !ok {
				c.fail(VReadModel, "reservations read model %s: reservation %q (qty %d) is open, the fold has it closed or never made", agg, id, qty)
			}
		}
		delete(resRows, agg)
	}
	for agg := range stockRows {
		c.fail(VReadModel, "stock read model has a row for %s, which has no stored event", agg)
	}
	for agg := range resRows {
		c.fail(VReadModel, "reservations read model has rows for %s, which has no stored event", agg)
	}
}
