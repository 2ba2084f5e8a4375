// Package prometheustest runs a real Prometheus server (the binary `make prometheus` installs) for tests:
// scraping the controller, evaluating the alert rules of config/components/monitoring on its metrics, and
// parsing PromQL with the server's own parser (its /api/v1/parse_query), so that the tests need no
// Prometheus Go module. RuleFile turns the PrometheusRule into the rule file Prometheus and promtool read.
package prometheustest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// Options say what the server scrapes and evaluates.
type Options struct {
	// Binary is the prometheus binary.
	Binary string
	// Dir holds the configuration, the data and the log; the caller removes it.
	Dir string
	// Job names the scrape job of Targets (the job label of their series).
	Job string
	// Targets are host:port addresses whose /metrics the server scrapes, every Interval.
	Targets []string
	// RuleFiles are rule files (see RuleFile) the server evaluates every Interval.
	RuleFiles []string
	// Interval is the scrape and rule evaluation interval; 1s when zero.
	Interval time.Duration
}

// Server is a running Prometheus.
type Server struct {
	// URL is the server's address, http://127.0.0.1:<port>.
	URL     string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	stop    sync.Once
}

// stopGrace is how long Stop waits for the server to exit after SIGTERM before it kills it.
const stopGrace = 10 * time.Second

// Start starts Prometheus on a free port of 127.0.0.1 and returns once it is ready, or fails when it exits or
// ctx ends first; the error then carries the end of its log.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Interval == 0 {
		o.Interval = time.Second
	}
	config := map[string]any{
		"global":     map[string]any{"scrape_interval": o.Interval.String(), "evaluation_interval": o.Interval.String()},
		"rule_files": o.RuleFiles,
	}
	if len(o.Targets) > 0 {
		config["scrape_configs"] = []any{map[string]any{
			"job_name":       o.Job,
			"static_configs": []any{map[string]any{"targets": o.Targets}},
		}}
	}
	data, err := yaml.Marshal(config)
	if err != nil {
		return nil, fmt.Errorf("encoding the Prometheus configuration: %w", err)
	}
	configPath := filepath.Join(o.Dir, "prometheus.yml")
	if err := os.WriteFile(configPath, data, 0o600); err != nil {
		return nil, fmt.Errorf("writing the Prometheus configuration: %w", err)
	}
	port, err := freePort(ctx)
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL:     "http://127.0.0.1:" + port,
		logPath: filepath.Join(o.Dir, "prometheus.log"),
		exited:  make(chan struct{}),
	}
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the Prometheus log: %w", err)
	}
	defer logFile.Close()
	// The server outlives ctx, which bounds only the start; Stop ends it.
	s.cmd = exec.CommandContext(context.WithoutCancel(ctx), o.Binary,
		"--config.file="+configPath,
		"--storage.tsdb.path="+filepath.Join(o.Dir, "data"),
		"--web.listen-address=127.0.0.1:"+port,
	)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", o.Binary, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitReady(ctx); err != nil {
		return nil, errors.Join(err, s.Stop())
	}
	return s, nil
}

// freePort returns a port of 127.0.0.1 that nothing listened on a moment ago.
func freePort(ctx context.Context) (string, error) {
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

func (s *Server) waitReady(ctx context.Context) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/-/ready", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("prometheus exited before it was ready (%w); its log ends:\n%s", s.waitErr, s.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("prometheus not ready: %w; its log ends:\n%s", ctx.Err(), s.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop ends the server: SIGTERM, and SIGKILL if it has not exited stopGrace later.
func (s *Server) Stop() error {
	var err error
	s.stop.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(stopGrace):
			_ = s.cmd.Process.Kill()
			<-s.exited
			err = fmt.Errorf("prometheus did not exit within %s of SIGTERM; killed it", stopGrace)
		}
	})
	return err
}

// LogTail returns the last lines of the server's log, for failure messages.
func (s *Server) LogTail() string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// apiResponse is the envelope of every answer of the HTTP API.
type apiResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
}

// get calls an endpoint of the HTTP API and decodes its data into out.
func (s *Server) get(ctx context.Context, path string, params url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the answer to GET %s: %w", path, err)
	}
	var r apiResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	if r.Status != "success" {
		return fmt.Errorf("GET %s: %s: %s", path, r.ErrorType, r.Error)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		return fmt.Errorf("decoding the answer to GET %s: %w", path, err)
	}
	return nil
}

// Query evaluates an instant query now; a query whose result is not a vector is an error.
func (s *Server) Query(ctx context.Context, query string) (model.Vector, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := s.get(ctx, "/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return nil, fmt.Errorf("query %q: %w", query, err)
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: a %s, not a vector", query, data.ResultType)
	}
	var v model.Vector
	if err := json.Unmarshal(data.Result, &v); err != nil {
		return nil, fmt.Errorf("query %q: decoding the vector: %w", query, err)
	}
	return v, nil
}

// MetricNames parses query as the server does (an invalid query is an error, with the parser's message) and
// returns the metric name of every vector and range selector in it, in order. A selector without a name
// (only {__name__=~"..."}) is an error: nothing could check what it selects.
func (s *Server) MetricNames(ctx context.Context, query string) ([]string, error) {
	var ast any
	if err := s.get(ctx, "/api/v1/parse_query", url.Values{"query": {query}}, &ast); err != nil {
		return nil, fmt.Errorf("parsing %q: %w", query, err)
	}
	var names []string
	var walk func(node any) error
	walk = func(node any) error {
		switch n := node.(type) {
		case map[string]any:
			if t, _ := n["type"].(string); t == "vectorSelector" || t == "matrixSelector" {
				name, _ := n["name"].(string)
				if name == "" {
					return fmt.Errorf("%q selects series without naming a metric", query)
				}
				names = append(names, name)
				return nil
			}
			for _, child := range n {
				if err := walk(child); err != nil {
					return err
				}
			}
		case []any:
			for _, child := range n {
				if err := walk(child); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return names, walk(ast)
}

// RuleStatus is one rule of a rule group as /api/v1/rules reports it.
type RuleStatus struct {
	Name      string `json:"name"`
	Type      string `json:"type"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
	// EvaluationTimestamp is the last evaluation's time; the zero time before the first.
	EvaluationTimestamp time.Time `json:"lastEvaluation"`
}

// Rules returns every rule the server loaded, with the health of its last evaluation.
func (s *Server) Rules(ctx context.Context) ([]RuleStatus, error) {
	var data struct {
		Groups []struct {
			Rules []RuleStatus `json:"rules"`
		} `json:"groups"`
	}
	if err := s.get(ctx, "/api/v1/rules", url.Values{}, &data); err != nil {
		return nil, err
	}
	var rules []RuleStatus
	for _, g := range data.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules, nil
}
