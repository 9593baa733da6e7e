package testenv

// SharedDir returns the directory of the private cluster, or "".
func SharedDir() string { return shared.dir }
