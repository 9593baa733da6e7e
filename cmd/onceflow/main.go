// Command onceflow is the operator's tool for onceflow services.
//
//	onceflow migrate       apply the embedded schema migrations
//	onceflow claims        list partition claims (owner, epoch, next offset)
//	onceflow dead-letters  list dead-lettered records
//	onceflow projections   list and manage projection versions: list, pause,
//	                       resume, reset, skip, switch, watch
//	onceflow dev-broker    run a Kafka-protocol broker for development
//
// Database commands read DATABASE_URL or --database-url. Exit status: 0 on
// success, 1 when the command failed, 2 on a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{os.Stdout, os.Stderr, os.Getenv})
	stop()
	os.Exit(code)
}

// env is what a command may touch besides its arguments, so tests can run
// commands in-process.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, e env) error
}

var commands = []command{
	{"migrate", "apply the embedded schema migrations", runMigrate},
	{"claims", "list partition claims (owner, epoch, position, halted)", runClaims},
	{"resume", "resume a halted partition", runResume},
	{"dead-letters", "list dead-lettered records", runDeadLetters},
	{"projections", "list and manage projection versions (list, pause, resume, reset, skip, switch, watch)", runProjections},
	{"dev-broker", "run a Kafka-protocol broker for development (foreground)", runDevBroker},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: onceflow <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'onceflow <command> -h' for the flags of a command.\n")
}

// run executes the command line and returns the exit status.
func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		usage(e.stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "-help", "--help":
		usage(e.stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		err := c.run(ctx, args[1:], e)
		var ue *usageError
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.As(err, &ue):
			fmt.Fprintf(e.stderr, "onceflow %s: %v\n", name, err)
			return 2
		default:
			fmt.Fprintf(e.stderr, "onceflow %s: %v\n", name, err)
			return 1
		}
	}
	fmt.Fprintf(e.stderr, "onceflow: unknown command %q\n\n", name)
	usage(e.stderr)
	return 2
}

// newFlagSet returns a flag set whose parse errors are usage errors.
func newFlagSet(name, synopsis string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("onceflow "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: onceflow %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and rejects positional arguments.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
