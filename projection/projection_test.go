package projection

import (
	"strings"
	"testing"
)

func TestChannelFitsAPostgresIdentifier(t *testing.T) {
	if got := Channel("onceflow"); got != "onceflow_positions" {
		t.Fatalf("Channel(onceflow) = %q", got)
	}
	long := strings.Repeat("s", 63)
	c := Channel(long)
	if len(c) > 63 || c == Channel(long[:62]+"t") {
		t.Fatalf("Channel of a 63-character schema: %q (%d bytes); two schemas must not share it", c, len(c))
	}
}

func TestDefValidate(t *testing.T) {
	d := Def{Name: "Bad Name", Version: 0}
	err := d.Validate()
	for _, want := range []string{`projection name "Bad Name"`, "version 0", "source topic is empty"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to say %q", err, want)
		}
	}
	d = Def{Name: "stock", Version: 2, SourceTopic: "inv"}
	if err := d.Validate(); err != nil || d.HistoryTopic != "inv.events" || d.Group() != "onceflow.projection.stock.v2" {
		t.Fatalf("Validate of a good def: %v %+v %s", err, d, d.Group())
	}
}
