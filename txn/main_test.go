package txn_test

import (
	"os"
	"testing"

	"github.com/onceflow/onceflow/internal/testenv"
)

// TestMain stops the private PostgreSQL cluster the tests share.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
