package txnmem_test

import (
	"testing"

	"github.com/onceflow/onceflow/eventsource"
	"github.com/onceflow/onceflow/txn"
	"github.com/onceflow/onceflow/txn/backendtest"
	"github.com/onceflow/onceflow/txn/txnmem"
)

func TestContract(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) (txn.Backend, eventsource.Reader) {
		s := txnmem.New()
		return s, s
	})
}
