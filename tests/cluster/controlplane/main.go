// Command controlplane is the test cluster's Kubernetes control plane: one
// multi-call binary holding etcd and the three control-plane components, built
// from the official source modules (k8s.io/kubernetes and
// go.etcd.io/etcd/server/v3) with no code of ours in between.
//
//	controlplane etcd ...                     etcd's own flags
//	controlplane kube-apiserver ...           kube-apiserver's own flags
//	controlplane kube-controller-manager ...  kube-controller-manager's own flags
//	controlplane kube-scheduler ...           kube-scheduler's own flags
//
// Each component runs as its own process (tests/cluster/controlplane.py starts
// them): in one process they would collide on global state (flags, metrics
// registries, feature gates). The main functions below are those of
// k8s.io/kubernetes/cmd/* and etcd's main.go, dispatched on the first argument.
package main

import (
	"fmt"
	"os"
	_ "time/tzdata" // for CronJob time zones, as kube-controller-manager's own main has it

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as in k8s.io/kubernetes/cmd/*
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, likewise
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric, likewise
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = "usage: controlplane etcd|kube-apiserver|kube-controller-manager|kube-scheduler [flags]"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	switch component {
	case "etcd":
		// etcdmain.Main reads its flags from args[1:], as from os.Args.
		etcdmain.Main(append([]string{component}, args...))
	case "kube-apiserver":
		run(apiserver.NewAPIServerCommand(), component, args)
	case "kube-controller-manager":
		run(controllermanager.NewControllerManagerCommand(), component, args)
	case "kube-scheduler":
		run(scheduler.NewSchedulerCommand(), component, args)
	default:
		fmt.Fprintf(os.Stderr, "controlplane: unknown component %q\n%s\n", component, usage)
		os.Exit(2)
	}
}

// run executes a component's command the way its own main does, with os.Args
// set to what that main would have seen.
func run(command *cobra.Command, component string, args []string) {
	os.Args = append([]string{component}, args...)
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}
