"""Write vegeta CSV samples against servers on 127.0.0.1 (see README.md here).

``python make_vegeta.py OUT.csv RATE [PROGRAM]``: 3 s at RATE requests/s over six targets in
turn: four GETs to a server answering 200, 200, 200, 429, 500 in turn (5 ms each), one to the
closed port 9 (connection refused), one to a server that answers after 1 s (vegeta's 300 ms
timeout ends it first). PROGRAM is the vegetacsv build (vegetacsv/main.go); without it the
``vegeta`` command runs ``vegeta attack | vegeta encode --to csv``."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.helpers import tiny_server  # noqa: E402

DURATION, TIMEOUT = "3s", "300ms"


def main(out: str, rate: str, program: str | None = None) -> None:
    with tiny_server((200, 200, 200, 429, 500), delay_s=0.005) as fast, \
            tiny_server((200,), delay_s=1.0) as slow:
        urls = [f"{fast}/vegeta"] * 4 + ["http://127.0.0.1:9/closed", f"{slow}/slow"]
        with open(out, "wb") as sink:
            if program:
                subprocess.run([program, rate, DURATION, TIMEOUT, *urls], stdout=sink,
                               check=True, timeout=30)
            else:
                targets = "".join(f"GET {u}\n" for u in urls).encode()
                attack = subprocess.run(
                    ["vegeta", "attack", f"-rate={rate}/s", f"-duration={DURATION}",
                     f"-timeout={TIMEOUT}", "-name=loadproof-sample"], input=targets,
                    capture_output=True, check=True, timeout=30)
                subprocess.run(["vegeta", "encode", "--to", "csv"], input=attack.stdout,
                               stdout=sink, check=True, timeout=30)


if __name__ == "__main__":
    main(*sys.argv[1:])
