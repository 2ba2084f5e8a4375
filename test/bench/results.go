package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// Result is one row of the benchmark table: our figure and the peers' figures for the same measure, taken in
// the same run, with the ratios that the targets are stated in.
type Result struct {
	// Row names what is measured, e.g. "cold copy, 2-platform index, 8x64 MiB layers".
	Row string `json:"row"`
	// Measure names the unit and statistic of Values, e.g. "seconds (median of 3)".
	Measure string `json:"measure"`
	// Values holds the figure of each contender: "ours" and peers such as "crane", "skopeo", "raw floor".
	Values map[string]float64 `json:"values"`
	// Ratios holds the ratios the targets speak of, e.g. "ours/crane".
	Ratios map[string]float64 `json:"ratios,omitempty"`
	// Target states the goal in words, e.g. "ours/crane <= 1.0".
	Target string `json:"target,omitempty"`
	// Met says whether the target was met; nil when the row has no target or was skipped.
	Met *bool `json:"met,omitempty"`
	// Note explains a skip, a miss, or what bounds the figure.
	Note string `json:"note,omitempty"`
}

// writeTable prints results as an aligned table.
func writeTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ROW\tMEASURE\tVALUES\tRATIOS\tTARGET\tMET\tNOTE")
	for _, r := range results {
		met := "-"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Row, r.Measure, formatMap(r.Values), formatMap(r.Ratios), r.Target, met, r.Note)
	}
	_ = tw.Flush()
}

func formatMap(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// writeJSON writes results to path.
func writeJSON(path string, results []Result) error {
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
