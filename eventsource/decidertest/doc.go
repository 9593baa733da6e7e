// Package decidertest runs given/when/then scenarios against an
// eventsource.Decider, without Kafka or Postgres: given the events already
// stored, when a command arrives, then these events are produced, or this
// rejection. Every scenario also checks what the runtime relies on: Decide
// is deterministic (the same answer twice), a rejection produces no events,
// and, with WithRegistry, every event survives the registry's codec (what is
// stored is what is replayed), with WithInvariant, the state after the given
// events and after the produced events keeps the domain's invariants.
//
//	decidertest.Run(t, account.Decider(), []decidertest.Scenario[State, Command, Event]{
//		{Name: "deposit", When: Deposit{Amount: 5}, Then: []Event{Deposited{Amount: 5}}},
//		{Name: "overdraft", Given: []Event{Deposited{Amount: 5}}, When: Withdraw{Amount: 9}, WantErr: ErrInsufficientFunds},
//	}, decidertest.WithRegistry(reg))
package decidertest
