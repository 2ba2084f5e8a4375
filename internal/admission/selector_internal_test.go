package admission

import (
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

func TestExcludeNamespaces(t *testing.T) {
	notIn := func(values ...string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: values}
	}
	for _, tc := range []struct {
		name        string
		selector    *metav1.LabelSelector
		ignored     []string
		wantChanged bool
	}{
		{"no selector", nil, []string{"kube-system", "ops"}, true},
		{"shipped selector lacks a flag's namespace",
			&metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{notIn("kube-system", "image-clone-system")}},
			[]string{"kube-system", "image-clone-system", "ops"}, true},
		{"already complete", &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{notIn("kube-system", "ops")}},
			[]string{"ops", "kube-system"}, false},
		{"other terms are kept", &metav1.LabelSelector{
			MatchLabels:      map[string]string{"team": "a"},
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpExists}},
		}, []string{"kube-system"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hook := &admissionregistrationv1.MutatingWebhook{NamespaceSelector: tc.selector.DeepCopy()}
			if changed := excludeNamespaces(hook, tc.ignored); changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			sel, err := metav1.LabelSelectorAsSelector(hook.NamespaceSelector)
			if err != nil {
				t.Fatal(err)
			}
			for _, ns := range tc.ignored {
				if sel.Matches(labels.Set{"kubernetes.io/metadata.name": ns, "team": "a", "tier": "x"}) {
					t.Errorf("selector %s still matches ignored namespace %s", sel, ns)
				}
			}
			if tc.selector != nil && tc.selector.MatchLabels != nil && hook.NamespaceSelector.MatchLabels["team"] != "a" {
				t.Errorf("matchLabels lost: %v", hook.NamespaceSelector)
			}
			if tc.selector != nil && len(tc.selector.MatchExpressions) > 0 && tc.selector.MatchExpressions[0].Key == "tier" &&
				!sel.Matches(labels.Set{"kubernetes.io/metadata.name": "apps", "team": "a", "tier": "x"}) {
				t.Errorf("selector %s no longer matches a namespace it matched", sel)
			}
		})
	}
}
