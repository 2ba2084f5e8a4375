//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/image-clone-controller/image-clone-controller/internal/testing/prometheustest"
	"github.com/image-clone-controller/image-clone-controller/internal/testing/testbin"
)

var _ = Describe("a Prometheus scraping the controller", func() {
	ctx := context.Background()

	It("counts the controller's copies, and evaluates every alert of config/components/monitoring on its metrics", func() {
		binary, err := testbin.Client("prometheus", "PROMETHEUS_BINARY")
		Expect(err).NotTo(HaveOccurred())
		dir := GinkgoT().TempDir()

		// The alerts as the Prometheus Operator would load them from the PrometheusRule.
		pr, err := prometheustest.ReadPrometheusRule(filepath.Join(root, "config", "components", "monitoring", "prometheusrule.yaml"))
		Expect(err).NotTo(HaveOccurred())
		rules, err := prometheustest.RuleFile(pr.Spec.Groups)
		Expect(err).NotTo(HaveOccurred())
		rulesPath := filepath.Join(dir, "rules.yaml")
		Expect(os.WriteFile(rulesPath, rules, 0o644)).To(Succeed())

		metricsHost := strings.TrimSuffix(strings.TrimPrefix(metricsURL, "http://"), "/metrics")
		startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		prom, err := prometheustest.Start(startCtx, prometheustest.Options{
			Binary:    binary,
			Dir:       dir,
			Job:       "image-clone-controller",
			Targets:   []string{metricsHost},
			RuleFiles: []string{rulesPath},
		})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			Expect(prom.Stop()).To(Succeed())
		})

		By("copying an image no other spec copied")
		ns := newNamespace()
		_, image, backupImage, _ := pushRandomImage("scraped")
		d := newDeployment(ns, "scraped", nil, []string{image})
		Expect(k8sClient.Create(ctx, d)).To(Succeed())
		Eventually(templateImages(d)).Should(Equal([]string{backupImage}))

		By("querying Prometheus for the copies the controller made")
		Eventually(func(g Gomega) {
			v, err := prom.Query(ctx, `sum(image_clone_copies_total{job="image-clone-controller",result="copied"})`)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(v).To(HaveLen(1), "no image_clone_copies_total scraped yet; Prometheus log:\n"+prom.LogTail())
			g.Expect(float64(v[0].Value)).To(BeNumerically(">", 0))
		}).Should(Succeed())

		By("evaluating every alert on the scraped metrics without an error")
		Eventually(func(g Gomega) {
			loaded, err := prom.Rules(ctx)
			g.Expect(err).NotTo(HaveOccurred())
			names := map[string]bool{}
			for _, r := range loaded {
				g.Expect(r.EvaluationTimestamp.IsZero()).To(BeFalse(), "alert %s not evaluated yet", r.Name)
				g.Expect(r.Health).To(Equal("ok"), "alert %s: %s", r.Name, r.LastError)
				names[r.Name] = true
			}
			for _, group := range pr.Spec.Groups {
				for _, r := range group.Rules {
					g.Expect(names).To(HaveKey(r.Alert), "Prometheus did not load alert %s", r.Alert)
				}
			}
		}).Should(Succeed())
	})
})
