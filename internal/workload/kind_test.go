package workload

import (
	"slices"
	"strings"
	"testing"
)

func TestParseKinds(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{"Deployment", "DaemonSet", "StatefulSet", "CronJob", "Job"}, want: KindNames},
		{in: []string{"statefulset", " cronjob ", "StatefulSet"}, want: []string{"StatefulSet", "CronJob"}},
		{in: []string{"Deployment", "ReplicaSet"}, wantErr: `unknown workload kind "ReplicaSet": the kinds are Deployment, DaemonSet, StatefulSet, CronJob, Job`},
		{in: nil, wantErr: "no workload kind"},
	} {
		got, err := ParseKinds(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseKinds(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
		case err != nil || !slices.Equal(got, tc.want):
			t.Errorf("ParseKinds(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
