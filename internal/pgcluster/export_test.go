package pgcluster

// DisableWatchdog makes Start spawn no watchdog in this process, so that a
// test can leave an orphaned server behind on purpose.
func DisableWatchdog() { noWatchdog.Store(true) }

// WatchdogPID returns the pid of this process's watchdog for dataDir, or 0.
func WatchdogPID(dataDir string) int {
	watchdogs.Lock()
	defer watchdogs.Unlock()
	if wd := watchdogs.m[dataDir]; wd != nil {
		return wd.pid
	}
	return 0
}

// WriteOwnerFile records pid as the owner of the cluster directory dir.
func WriteOwnerFile(dir string, pid int, throwaway bool) error {
	return writeOwner(dir, owner{pid: pid, start: procStartTime(pid), throwaway: throwaway})
}
