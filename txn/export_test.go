package txn

// Hooks for the external test package (txn_test imports internal/testenv,
// which imports txn, so the tests cannot live in package txn).
var (
	LoadMigrations = loadMigrations
	MigrateThese   = migrate
)
