package pgschema

import "testing"

func TestCheckAndRewrite(t *testing.T) {
	for _, ok := range []string{"onceflow", "tenant_a", "_x", "a1"} {
		if err := Check(ok); err != nil {
			t.Errorf("Check(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "A", "1a", "a-b", "a.b", "pg_x", "information_schema", "x\"; DROP"} {
		if err := Check(bad); err == nil {
			t.Errorf("Check(%q) accepted", bad)
		}
	}
	in := "CREATE SCHEMA IF NOT EXISTS onceflow; SELECT * FROM onceflow.events JOIN onceflow.snapshots s ON true -- onceflow"
	want := `CREATE SCHEMA IF NOT EXISTS "t1"; SELECT * FROM "t1".events JOIN "t1".snapshots s ON true -- onceflow`
	if got := Rewrite("t1", in); got != want {
		t.Fatalf("Rewrite = %q", got)
	}
	if got := Rewrite(`x"; DROP TABLE y; --`, "SELECT 1 FROM onceflow.events"); got != `SELECT 1 FROM "x""; DROP TABLE y; --".events` {
		t.Fatalf("a hostile name is not quoted: %q", got)
	}
	if Rewrite("onceflow", in) != in || Rewrite("", in) != in {
		t.Fatal("the default schema must leave the SQL alone")
	}
}
