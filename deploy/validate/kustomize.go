package main

import (
	"fmt"
	"os"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// runKustomize builds the kustomization in dir with kustomize's own library (the one kubectl
// embeds for `kubectl apply -k` / `kubectl kustomize`), with its default options (no plugins,
// files only from inside dir), and writes the resulting manifests to out.
func runKustomize(dir, out string) {
	var p problems
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		p.add("%s: %v", dir, err)
		p.exit("kustomize")
	}
	y, err := m.AsYaml()
	if err != nil {
		p.add("%v", err)
		p.exit("kustomize")
	}
	if err := os.WriteFile(out, y, 0o644); err != nil {
		p.add("%v", err)
		p.exit("kustomize")
	}
	fmt.Printf("  %s: %d objects:", dir, m.Size())
	for _, r := range m.Resources() {
		fmt.Printf(" %s/%s", r.GetKind(), r.GetName())
	}
	fmt.Println()
}
