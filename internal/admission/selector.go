package admission

import (
	"context"
	"fmt"
	"slices"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KeepNamespaceSelector makes the webhooks of the MutatingWebhookConfiguration configuration leave the ignored
// namespaces out, from every replica at its start (the update is idempotent): the API server then never calls the webhook for kube-system, the
// controller's own namespace or a namespace --ignore-namespaces names, even if the shipped configuration
// predates a change of that flag. Other terms of the selector are kept; namespaces are only ever added.
func KeepNamespaceSelector(mgr ctrl.Manager, configuration string, ignored []string) error {
	return mgr.Add(&selectorKeeper{client: mgr.GetClient(), reader: mgr.GetAPIReader(), name: configuration, ignored: ignored,
		log: mgr.GetLogger().WithName("webhook-configuration").WithValues("configuration", configuration)})
}

type selectorKeeper struct {
	client  client.Writer
	reader  client.Reader
	name    string
	ignored []string
	log     logr.Logger
}

// Start updates the configuration once and returns: a later change of the flag restarts the controller.
func (k *selectorKeeper) Start(ctx context.Context) error {
	log := k.log
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		config := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := k.reader.Get(ctx, types.NamespacedName{Name: k.name}, config); err != nil {
			return err
		}
		changed := false
		for i := range config.Webhooks {
			changed = excludeNamespaces(&config.Webhooks[i], k.ignored) || changed
		}
		if !changed {
			return nil
		}
		if err := k.client.Update(ctx, config, client.FieldOwner("image-clone-controller")); err != nil {
			return err
		}
		log.Info("The webhook configuration now leaves every ignored namespace out", "ignoredNamespaces", k.ignored)
		return nil
	})
	switch {
	case apierrors.IsNotFound(err):
		log.Info("The webhook configuration does not exist, so the API server never calls the webhook; workloads are rewritten by the reconciler only")
	case err != nil:
		// Not fatal: the handler leaves ignored namespaces alone anyway.
		log.Error(err, "Could not make the webhook configuration leave the ignored namespaces out")
	}
	return nil
}

// excludeNamespaces adds every namespace of ignored to the kubernetes.io/metadata.name NotIn term of hook's
// namespaceSelector (adding the term if it has none) and reports whether it changed anything.
func excludeNamespaces(hook *admissionregistrationv1.MutatingWebhook, ignored []string) bool {
	if hook.NamespaceSelector == nil {
		hook.NamespaceSelector = &metav1.LabelSelector{}
	}
	sel := hook.NamespaceSelector
	i := slices.IndexFunc(sel.MatchExpressions, func(e metav1.LabelSelectorRequirement) bool {
		return e.Key == corev1.LabelMetadataName && e.Operator == metav1.LabelSelectorOpNotIn
	})
	if i < 0 {
		sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
			Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn})
		i = len(sel.MatchExpressions) - 1
	}
	term := &sel.MatchExpressions[i]
	changed := false
	for _, ns := range ignored {
		if !slices.Contains(term.Values, ns) {
			term.Values = append(term.Values, ns)
			changed = true
		}
	}
	return changed
}

// NeedLeaderElection is false: a replica that never leads still serves the webhook, with its own flags.
func (k *selectorKeeper) NeedLeaderElection() bool { return false }

// String names the runnable in the manager's logs.
func (k *selectorKeeper) String() string {
	return fmt.Sprintf("webhook namespace selector of %s", k.name)
}
