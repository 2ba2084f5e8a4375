// Command launch runs a command and reports its peak resident set size, for the benchmark harness:
//
//	launch CMD [ARG ...]
//
// Once CMD exits, "MAXRSS_KB USER_SECONDS SYSTEM_SECONDS" of CMD is written to file descriptor 3; the exit
// status is CMD's.
//
// The harness cannot read this figure itself: Go starts processes with vfork semantics (the child borrows its
// parent's memory until it calls exec), and Linux carries the borrowed memory's high-water mark into the
// child's maxrss at exec. The harness's own RSS would hide every tool's figure; this launcher imports nothing
// but the standard library, so the figure it reports is max(its own ~2 MiB, the command's peak).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: launch CMD [ARG ...]")
		os.Exit(2)
	}
	cmd := exec.CommandContext(context.Background(), os.Args[1], os.Args[2:]...) //nolint:gosec // G702: running the given command is the point
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		fmt.Fprintln(os.Stderr, "launch:", err)
		os.Exit(2)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		report := os.NewFile(3, "rss")
		_, _ = fmt.Fprintf(report, "%d %.6f %.6f", ru.Maxrss, seconds(ru.Utime), seconds(ru.Stime))
		_ = report.Close()
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

func seconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }
