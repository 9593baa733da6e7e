package testkit_test

import (
	"cmp"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/testkit"
)

// requireDocker skips a test that needs a Docker engine when there is none
// or the run asked for the local environment.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv(testkit.EnvMode) == "local" {
		t.Skip(testkit.EnvMode + "=local")
	}
	if err := testkit.DockerAvailable(context.Background()); err != nil {
		t.Skipf("no Docker: %v", err)
	}
}

// requireImages skips a test that starts containers when the configured
// images are not present: they cannot be pulled on a machine without a
// registry. CI's docker stage configures the local images, so these tests
// run there.
func requireImages(t *testing.T) {
	t.Helper()
	requireDocker(t)
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("no docker CLI to inspect images")
	}
	for _, img := range []string{
		cmp.Or(os.Getenv(testkit.EnvPostgresImage), testkit.DefaultPostgresImage),
		cmp.Or(os.Getenv(testkit.EnvKafkaImage), testkit.DefaultKafkaImage),
	} {
		if err := exec.Command("docker", "image", "inspect", img).Run(); err != nil {
			t.Skipf("image %s is not present: pull it, or run scripts/build-test-images.sh and set %s and %s", img, testkit.EnvPostgresImage, testkit.EnvKafkaImage)
		}
	}
}

// newFails runs New, wants it to fail with kind within limit, and checks
// that the message says what and how to fix it.
func newFails(t *testing.T, kind error, limit time.Duration, want []string, opts ...testkit.Option) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*limit)
	defer cancel()
	start := time.Now()
	env, err := testkit.New(ctx, opts...)
	took := time.Since(start)
	if err == nil {
		env.Close()
		t.Fatalf("New succeeded, want %v", kind)
	}
	t.Logf("after %v:\n%v", took.Round(time.Millisecond), err)
	if !errors.Is(err, kind) {
		t.Errorf("error is not %v", kind)
	}
	var ee *testkit.EnvError
	if !errors.As(err, &ee) || ee.Fix == "" {
		t.Errorf("want an *EnvError with a fix, got %T", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q", w)
		}
	}
	if took > limit {
		t.Errorf("failing took %v, want < %v", took, limit)
	}
}

func TestDockerNotRunning(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	newFails(t, testkit.ErrDockerUnavailable, 15*time.Second,
		[]string{"DOCKER_HOST=unix:///nonexistent/docker.sock", "start the Docker engine", testkit.EnvMode + "=local"},
		testkit.WithMode(testkit.ModeDocker))
}

// Auto mode takes the local environment when no engine answers, and says so.
func TestAutoFallsBackToLocal(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	env := testkit.Start(t, testkit.WithMode(testkit.ModeAuto))
	if env.Mode() != testkit.ModeLocal {
		t.Fatalf("mode %s, want local", env.Mode())
	}
}

// Auto mode also takes the local environment when Docker answers but an
// image is neither present nor pullable; docker mode fails instead
// (TestImageMissing).
func TestAutoFallsBackWithoutImages(t *testing.T) {
	requireDocker(t)
	env := testkit.Start(t, testkit.WithMode(testkit.ModeAuto), testkit.WithKafkaImage("onceflow/no-such-image:missing"), testkit.WithPullTimeout(20*time.Second))
	if env.Mode() != testkit.ModeLocal {
		t.Fatalf("mode %s, want local", env.Mode())
	}
}

func TestBadModeVariable(t *testing.T) {
	t.Setenv(testkit.EnvMode, "podman")
	newFails(t, testkit.ErrInvalidConfig, time.Second, []string{`ONCEFLOW_TESTENV="podman": want docker, local or auto`})
}

func TestImageMissing(t *testing.T) {
	requireDocker(t)
	const img = "onceflow/no-such-image:missing"
	newFails(t, testkit.ErrImageUnavailable, 30*time.Second,
		[]string{"image " + img + " is not present locally and could not be pulled", "scripts/build-test-images.sh", testkit.EnvKafkaImage},
		testkit.WithMode(testkit.ModeDocker), testkit.WithKafkaImage(img), testkit.WithPullTimeout(20*time.Second))
}

// takenPort returns a port something listens on (on all interfaces).
func takenPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func TestPortClashDocker(t *testing.T) {
	requireImages(t)
	p := takenPort(t)
	newFails(t, testkit.ErrPortInUse, time.Minute,
		[]string{"cannot publish host port " + strconv.Itoa(p), "WithPostgresPort"},
		testkit.WithMode(testkit.ModeDocker), testkit.WithPostgresPort(p))
}

func TestPortClashLocal(t *testing.T) {
	p := takenPort(t)
	newFails(t, testkit.ErrPortInUse, 15*time.Second,
		[]string{"the Kafka port " + strconv.Itoa(p) + " is taken", "WithKafkaPort"},
		testkit.WithMode(testkit.ModeLocal), testkit.WithKafkaPort(p))
}

func TestPostgresRefusesConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	newFails(t, testkit.ErrPostgresUnavailable, 15*time.Second,
		[]string{"refused the connection", addr, testkit.EnvDatabaseURL},
		testkit.WithMode(testkit.ModeLocal), testkit.WithPostgresURL("postgres://postgres@"+addr+"/postgres?sslmode=disable"))
}

// A server that answers but rejects the credentials fails at once, without
// waiting out a timeout.
func TestPostgresRejectsCredentials(t *testing.T) {
	requireImages(t)
	env := testkit.Start(t, testkit.WithMode(testkit.ModeDocker)) // a server with password authentication
	bad := strings.Replace(env.DSN(), ":onceflow@", ":wrong@", 1)
	if bad == env.DSN() {
		t.Fatalf("unexpected DSN shape %s", env.DSN())
	}
	newFails(t, testkit.ErrPostgresUnavailable, 15*time.Second,
		[]string{"rejected the credentials", "POSTGRES_PASSWORD"},
		testkit.WithMode(testkit.ModeLocal), testkit.WithPostgresURL(bad))
}
