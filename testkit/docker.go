package testkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
)

// ryukImage is the reaper testcontainers starts unless
// TESTCONTAINERS_RYUK_DISABLED=true (testcontainers-go v0.44's default).
const ryukImage = "testcontainers/ryuk:0.14.0"

// kafkaFlavorLabel marks an image built by scripts/build-test-images.sh from
// cmd/onceflow-devbroker: no shell, the binary waits for the advertise file.
const kafkaFlavorLabel = "org.onceflow.kafka-flavor"

const (
	kafkaPort      = "9092/tcp"
	postgresPort   = "5432/tcp"
	advertiseFile  = "/onceflow/advertise"
	starterScript  = "/tmp/onceflow-kafka-start.sh"
	kafkaClusterID = "b25jZWZsb3ctdGVzdGtpdA" // any 22-character base64 UUID
	pgUser         = "onceflow"
	pgPassword     = "onceflow"
	pgDatabase     = "onceflow"
)

const imageFix = "pull it where a registry is reachable (docker pull %s); or, without a registry, build local images with scripts/build-test-images.sh and set " +
	EnvPostgresImage + "=onceflow/postgres:15-local " + EnvKafkaImage + "=onceflow/devbroker:local; or run without Docker: " + EnvMode + "=local"

// dockerFix is the advice when no engine answers.
func dockerFix() string {
	return "start the Docker engine (Docker Desktop, `systemctl start docker`, or `dockerd &` as root), or point DOCKER_HOST at a running one; to run without Docker set " + EnvMode + "=local"
}

// DockerAvailable reports whether a Docker engine answers (within 5
// seconds), with the same discovery New uses: nil, or an error wrapping
// ErrDockerUnavailable that says why. Tests that need containers can skip
// when it fails.
func DockerAvailable(ctx context.Context) error { return probeDocker(ctx, 5*time.Second) }

// probeDocker checks that a Docker engine answers within timeout. An
// explicit DOCKER_HOST must answer itself: testcontainers would quietly try
// other sockets, and a user who set it means that engine.
func probeDocker(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		cli, err := client.New(client.FromEnv)
		if err != nil {
			return envErr(ErrDockerUnavailable, err, dockerFix(), "bad DOCKER_HOST=%q", h)
		}
		defer cli.Close()
		if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
			return envErr(ErrDockerUnavailable, err, dockerFix(), "no Docker engine answers at DOCKER_HOST=%s within %v", h, timeout)
		}
		return nil
	}
	// testcontainers' discovery (default socket, docker context, rootless
	// socket, ~/.testcontainers.properties) has no deadline of its own.
	done := make(chan error, 1)
	go func() {
		p, err := testcontainers.NewDockerProvider(testcontainers.WithLogger(tclog.NewNoopLogger()))
		if err == nil {
			err = p.Health(ctx)
			p.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return envErr(ErrDockerUnavailable, err, dockerFix(), "no Docker engine answers (DOCKER_HOST unset, default socket /var/run/docker.sock)")
		}
		return nil
	case <-ctx.Done():
		return envErr(ErrDockerUnavailable, ctx.Err(), dockerFix(), "the Docker engine did not answer within %v", timeout)
	}
}

// startDocker runs the containers. ctx bounds image pulls (each also by
// the pull timeout); sctx bounds everything else.
func (e *Env) startDocker(ctx, sctx context.Context, c *config) error {
	if err := probeDocker(sctx, c.dockerProbeTimeout); err != nil {
		return err
	}
	provider, err := testcontainers.NewDockerProvider(testcontainers.WithLogger(tcLogger(c.logf)))
	if err != nil {
		return envErr(ErrDockerUnavailable, err, dockerFix(), "connect to Docker")
	}
	e.onClose(func(context.Context) error { return provider.Close() })
	cli := provider.Client()

	if !ryukDisabled() {
		if _, err := ensureImage(ctx, cli, ryukImage, c.pullTimeout, c.logf); err != nil {
			var ee *EnvError
			if errors.As(err, &ee) && errors.Is(err, ErrImageUnavailable) {
				ee.Fix = "set TESTCONTAINERS_RYUK_DISABLED=true (testkit removes its containers itself; only a killed test process leaves some behind), or pull " + ryukImage
			}
			return err
		}
	}
	kafkaLabels, err := ensureImage(ctx, cli, c.kafkaImage, c.pullTimeout, c.logf)
	if err != nil {
		return err
	}
	if c.postgresURL == "" {
		if _, err := ensureImage(ctx, cli, c.postgresImage, c.pullTimeout, c.logf); err != nil {
			return err
		}
	}

	// Both containers start concurrently; the first failure stops the other.
	sctx, cancel := context.WithCancel(sctx)
	defer cancel()
	pgDone := make(chan error, 1)
	if c.postgresURL == "" {
		go func() {
			err := e.runPostgres(sctx, c)
			if err != nil {
				cancel()
			}
			pgDone <- err
		}()
	} else {
		pgDone <- nil
	}
	kerr := e.runKafka(sctx, c, kafkaLabels[kafkaFlavorLabel] == "devbroker")
	if kerr != nil {
		cancel()
	}
	perr := <-pgDone
	// Report the cause, not the other start-up it cancelled.
	switch {
	case kerr != nil && perr != nil && sctx.Err() != nil && errors.Is(perr, context.Canceled):
		return kerr
	case kerr != nil && perr != nil && errors.Is(kerr, context.Canceled):
		return perr
	}
	return errors.Join(kerr, perr)
}

// ensureImage returns the labels of image, pulling it first (one attempt,
// bounded by timeout) when it is not present.
func ensureImage(ctx context.Context, cli client.APIClient, image string, timeout time.Duration, logf func(string, ...any)) (map[string]string, error) {
	labels := func(r client.ImageInspectResult) map[string]string {
		if r.Config == nil {
			return nil
		}
		return r.Config.Labels
	}
	res, err := cli.ImageInspect(ctx, image)
	if err == nil {
		return labels(res), nil
	}
	if !cerrdefs.IsNotFound(err) {
		return nil, envErr(ErrDockerUnavailable, err, dockerFix(), "inspect image %s", image)
	}
	logf("testkit: pulling %s (not present locally; at most %v)", image, timeout)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.ImagePull(pctx, image, client.ImagePullOptions{})
	if err == nil {
		err = resp.Wait(pctx)
		resp.Close()
	}
	if err == nil {
		res, err = cli.ImageInspect(ctx, image)
	}
	if err != nil {
		if pctx.Err() != nil {
			err = fmt.Errorf("pull did not finish within %v: %w", timeout, err)
		}
		return nil, envErr(ErrImageUnavailable, err, fmt.Sprintf(imageFix, image), "image %s is not present locally and could not be pulled", image)
	}
	return labels(res), nil
}

// ryukDisabled mirrors testcontainers' setting: the environment variable,
// else ~/.testcontainers.properties.
func ryukDisabled() bool {
	if v, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); ok {
		return v == "true"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return false
	}
	f, err := os.Open(filepath.Join(home, ".testcontainers.properties"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && strings.TrimSpace(k) == "ryuk.disabled" {
			return strings.TrimSpace(v) == "true"
		}
	}
	return false
}

// run starts a container and registers its removal (also when the start
// failed after the container was created, so nothing is left behind).
func (e *Env) run(ctx context.Context, c *config, what, image string, hostPort int, port string, opts ...testcontainers.ContainerCustomizer) (*testcontainers.DockerContainer, error) {
	opts = append(opts,
		testcontainers.WithLogger(tcLogger(c.logf)),
		testcontainers.WithExposedPorts(port),
		testcontainers.WithLabels(map[string]string{"org.onceflow.testkit": what}),
	)
	if hostPort != 0 {
		opts = append(opts, testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			if hc.PortBindings == nil {
				hc.PortBindings = network.PortMap{}
			}
			hc.PortBindings[network.MustParsePort(port)] = []network.PortBinding{{HostPort: strconv.Itoa(hostPort)}}
		}))
	}
	ctr, err := testcontainers.Run(ctx, image, opts...)
	if ctr != nil {
		e.onClose(func(ctx context.Context) error {
			if err := ctr.Terminate(ctx); err != nil {
				return fmt.Errorf("testkit: remove %s container %s: %w", what, ctr.GetContainerID(), err)
			}
			return nil
		})
	}
	if err != nil {
		msg := err.Error()
		if hostPort != 0 && (strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")) {
			return nil, envErr(ErrPortInUse, err, fmt.Sprintf("free host port %d or choose another (WithPostgresPort / WithKafkaPort; 0 picks a free one)", hostPort),
				"the %s container cannot publish host port %d: it is taken", what, hostPort)
		}
		kind := ErrKafkaUnavailable
		if what == "postgres" {
			kind = ErrPostgresUnavailable
		}
		return nil, envErr(kind, err, "see the Docker error above", "start the %s container (%s)", what, image)
	}
	return ctr, nil
}

// endpoint returns host:mappedPort of port, as the test process reaches it.
//
// testcontainers answers the engine's host, or, when it believes it runs in
// a container, the default gateway; that guess is wrong when the engine runs
// in the same container or VM as the tests (CI sandboxes). Docker's port
// proxy accepts connections as soon as the container runs, so a dial tells
// which address works: the reported host first, then 127.0.0.1.
func endpoint(ctx context.Context, ctr *testcontainers.DockerContainer, port string) (string, error) {
	host, err := ctr.Host(ctx)
	if err != nil {
		return "", err
	}
	p, err := ctr.MappedPort(ctx, port)
	if err != nil {
		return "", err
	}
	mapped := strconv.Itoa(int(p.Num()))
	var errs []error
	for _, h := range []string{host, "127.0.0.1"} {
		if h == "localhost" {
			h = "127.0.0.1" // published ports are bound on IPv4; skip an ::1 attempt
		}
		addr := net.JoinHostPort(h, mapped)
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			conn.Close()
			return addr, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("mapped port %s of %s is not reachable (set TESTCONTAINERS_HOST_OVERRIDE to the engine's address): %w", mapped, port, errors.Join(errs...))
}

func (e *Env) runPostgres(ctx context.Context, c *config) error {
	ctr, err := e.run(ctx, c, "postgres", c.postgresImage, c.postgresPort, postgresPort,
		testcontainers.WithEnv(map[string]string{
			"POSTGRES_USER": pgUser, "POSTGRES_PASSWORD": pgPassword, "POSTGRES_DB": pgDatabase,
		}))
	if err != nil {
		return err
	}
	addr, err := endpoint(ctx, ctr, postgresPort)
	if err != nil {
		return envErr(ErrPostgresUnavailable, err, "", "find the postgres container's mapped port")
	}
	dsn := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", pgUser, pgPassword, addr, pgDatabase)
	// The official image (and ours) initialise with TCP off, so the first
	// TCP connection that succeeds reaches the final server.
	err = waitReady(ctx, ctr, "postgres", func(ctx context.Context) (bool, error) {
		err := pingPostgres(ctx, dsn, "the postgres container", "")
		if err == nil {
			return true, nil
		}
		if errors.Is(err, ErrPostgresUnavailable) && strings.Contains(err.Error(), "rejected the credentials") {
			return false, err // not going to change
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	e.dsn = dsn
	e.withDB, _ = dsnWithDatabase(dsn)
	e.adminDSN = dsn
	return nil
}

func (e *Env) runKafka(ctx context.Context, c *config, devbroker bool) error {
	var opts []testcontainers.ContainerCustomizer
	if devbroker {
		opts = append(opts, testcontainers.WithCmd("-listen", "0.0.0.0", "-port", "9092", "-advertise-file", advertiseFile))
	} else {
		// apache/kafka, KRaft, one node. The PLAINTEXT listener is the one
		// published to the host; BROKER is for the broker itself.
		opts = append(opts,
			testcontainers.WithEnv(map[string]string{
				"CLUSTER_ID":                                     kafkaClusterID,
				"KAFKA_NODE_ID":                                  "1",
				"KAFKA_PROCESS_ROLES":                            "broker,controller",
				"KAFKA_LISTENERS":                                "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
				"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":           "BROKER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
				"KAFKA_INTER_BROKER_LISTENER_NAME":               "BROKER",
				"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
				"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@localhost:9094",
				"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
				"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":             "1",
				"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
				"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":            "1",
				"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":         "0",
				// Tests use short sessions to make rebalances quick; the
				// broker default minimum is 6s (the devbroker's is 100ms).
				"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "100",
				"KAFKA_LOG_DIRS":                     "/tmp/kraft-combined-logs",
			}),
			// Wait for the starter script, which sets the advertised
			// listener to the mapped port (the testcontainers Kafka
			// module's approach).
			testcontainers.WithEntrypoint("sh"),
			testcontainers.WithCmd("-c", "while [ ! -f "+starterScript+" ]; do sleep 0.1; done; exec sh "+starterScript),
		)
	}
	ctr, err := e.run(ctx, c, "kafka", c.kafkaImage, c.kafkaPort, kafkaPort, opts...)
	if err != nil {
		return err
	}
	addr, err := endpoint(ctx, ctr, kafkaPort)
	if err != nil {
		return envErr(ErrKafkaUnavailable, err, "", "find the kafka container's mapped port")
	}
	if devbroker {
		err = ctr.CopyToContainer(ctx, []byte(addr+"\n"), advertiseFile, 0o644)
	} else {
		var inspect *container.InspectResponse
		if inspect, err = ctr.Inspect(ctx); err == nil {
			script := fmt.Sprintf("export KAFKA_ADVERTISED_LISTENERS='PLAINTEXT://%s,BROKER://%s:9093'\nexec /etc/kafka/docker/run\n", addr, inspect.Config.Hostname)
			err = ctr.CopyToContainer(ctx, []byte(script), starterScript, 0o755)
		}
	}
	if err != nil {
		return envErr(ErrKafkaUnavailable, err, "", "give the kafka container its advertised address")
	}
	err = waitReady(ctx, ctr, "kafka", func(ctx context.Context) (bool, error) {
		return kafkaReady(ctx, addr) == nil, nil
	})
	if err != nil {
		return err
	}
	e.brokers = addr
	e.kafkaConfig = map[string]string{}
	if devbroker {
		e.kafkaConfig["enable.metrics.push"] = "false"
	}
	return nil
}

// waitReady polls ready until it reports true, returns an error, the
// container exits or ctx ends; the errors carry the container's last log
// lines.
func waitReady(ctx context.Context, ctr *testcontainers.DockerContainer, what string, ready func(ctx context.Context) (bool, error)) error {
	kind := ErrKafkaUnavailable
	if what == "postgres" {
		kind = ErrPostgresUnavailable
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := ready(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		st, err := ctr.State(ctx)
		if err == nil && !st.Running {
			return envErr(kind, nil, "the container's log above says why; check the image and its environment variables",
				"the %s container (%s) exited during start-up with status %d; last log lines:\n%s", what, ctr.Image, st.ExitCode, logTail(ctr, 20))
		}
		select {
		case <-ctx.Done():
			deadline := "the start timeout (WithStartTimeout)"
			return envErr(kind, ctx.Err(), "raise WithStartTimeout if the machine is slow, or check the image",
				"the %s container (%s) was not ready within %s; last log lines:\n%s", what, ctr.Image, deadline, logTail(ctr, 20))
		case <-tick.C:
		}
	}
}

func logTail(ctr *testcontainers.DockerContainer, n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// tcLogger routes testcontainers' progress lines to logf.
func tcLogger(logf func(string, ...any)) tclog.Logger { return tcLog(logf) }

type tcLog func(string, ...any)

func (l tcLog) Printf(format string, args ...any) { l("testcontainers: "+format, args...) }
