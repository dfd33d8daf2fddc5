// vegetacsv: `vegeta attack -rate R -duration D -timeout T | vegeta encode --to csv`, with
// vegeta's own library (lib.Attacker and lib.NewCSVEncoder are what the CLI runs).
// Usage: vegetacsv RATE DURATION TIMEOUT URL... > results.csv (one target per URL, in turn).
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

func main() {
	rate, _ := strconv.Atoi(os.Args[1])
	duration, _ := time.ParseDuration(os.Args[2])
	timeout, _ := time.ParseDuration(os.Args[3])
	var targets []vegeta.Target
	for _, u := range os.Args[4:] {
		targets = append(targets, vegeta.Target{Method: "GET", URL: u, Header: http.Header{}})
	}
	attacker := vegeta.NewAttacker(vegeta.Timeout(timeout), vegeta.Workers(4), vegeta.MaxWorkers(8))
	enc := vegeta.NewCSVEncoder(os.Stdout)
	pace := vegeta.Rate{Freq: rate, Per: time.Second}
	for res := range attacker.Attack(vegeta.NewStaticTargeter(targets...), pace, duration, "loadproof-sample") {
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
