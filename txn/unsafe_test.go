//go:build !onceflow_unsafe_offset_first

package txn

import "testing"

// The protocol-breaking switch used by the chaos harness's self-test must
// be off in every normal build.
func TestUnsafeSwitchOffInNormalBuilds(t *testing.T) {
	if unsafeOffsetFirst {
		t.Fatal("unsafeOffsetFirst is on without the onceflow_unsafe_offset_first build tag")
	}
}
