package main

import (
	"context"
	"strings"
	"testing"
)

// TestRunRefusesBadFlags covers the flag checks that stop the controller before it talks to any cluster.
func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    flags
		want string
	}{
		{"unknown workload kind", flags{backupRegistry: "backup.example.com", workloadKinds: "Deployment,ReplicaSet"},
			`--workload-kinds: unknown workload kind "ReplicaSet": the kinds are Deployment, DaemonSet, StatefulSet, CronJob, Job`},
		{"no workload kind", flags{backupRegistry: "backup.example.com", workloadKinds: " , "},
			"--workload-kinds: no workload kind"},
		{"no backup registry", flags{workloadKinds: "Deployment"}, "--backup-registry is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(context.Background(), tc.f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
